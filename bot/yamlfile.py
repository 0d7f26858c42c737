"""YAML loading that refuses duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    pass


def _index_paths(node: yaml.Node, path: tuple[Any, ...], out: dict[int, tuple[Any, ...]]) -> None:
    """Record the key path of every mapping and sequence node under ``node`` (id -> path).

    Iterative, and each node is visited once, so aliases (even recursive ones) are safe; an
    aliased node keeps the path of its first (anchored) occurrence."""
    stack = [(node, path)]
    while stack:
        current, where = stack.pop()
        if id(current) in out:
            continue
        if isinstance(current, yaml.MappingNode):
            out[id(current)] = where
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                stack.append((value_node, (*where, key)))
        elif isinstance(current, yaml.SequenceNode):
            out[id(current)] = where
            stack.extend((item, (*where, i)) for i, item in enumerate(current.value))


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_document(self, node: yaml.Node) -> Any:
        # Map nodes to key paths before constructing, so errors can name the key path.
        self.node_paths: dict[int, tuple[Any, ...]] = {}
        _index_paths(node, (), self.node_paths)
        return super().construct_document(node)  # type: ignore[no-untyped-call]


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor`: its keys may be overridden here (construct_mapping merges)
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            first = seen[key].start_mark.line + 1
            where = _loc((*getattr(loader, "node_paths", {}).get(id(node), ()), str(key)))
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{where}: duplicate key {key!r} (first defined on line {first})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)  # type: ignore[no-untyped-call]


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; errors name the file, the line and (for duplicate keys) the key path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        raise YamlError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{path.name}: {exc}") from None
