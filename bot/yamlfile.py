"""YAML loading for the catalog: bounded, strict, and precise about where a problem is.

On top of PyYAML's safe loader it refuses what PyYAML lets through or turns into a
traceback: duplicate keys (PyYAML keeps the last), a file too big or not UTF-8, keys that are
lists or mappings (``? [a, b]``), nesting deeper than :data:`MAX_DEPTH` (PyYAML recurses once
per level), aliases standing for more than :data:`MAX_ALIASED_VALUES` values (a 1 KB
"billion laughs" stands for 10^9 values) and scalars Python cannot hold (a 5000-digit
number, the date 2001-13-45). Every error names the file and the line.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from bot.messages import human_bytes

#: A real catalog is a few KB (a template is ~10 lines); 1 MiB holds thousands of templates,
#: and PyYAML (pure Python) parses it in about a second.
MAX_BYTES = 1 << 20
#: Values (scalars, lists, mappings) that aliases stand for, each alias counted as the values
#: it repeats: an alias bomb is refused at the alias that crosses it, before it is expanded.
#: Values written out in the file are not charged here: the size cap bounds them.
MAX_ALIASED_VALUES = 100_000
#: All values, aliases expanded. A value takes at least 2 bytes (`a,`), so values written out
#: in a file under MAX_BYTES always fit; only what aliases add can reach this.
MAX_VALUES = MAX_BYTES // 2
#: Levels of nested lists and mappings; a catalog needs 6 (templates.x.access.users[0]).
MAX_DEPTH = 32

_MERGE_TAG = "tag:yaml.org,2002:merge"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class YamlError(ValueError):
    pass


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    #: The line (1-based) of every mapping key, by key path: ('templates', 'win10') -> 14.
    key_lines: dict[tuple[Any, ...], int]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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


#: libyaml (C) reads the events some 20 times faster than PyYAML's Python parser; the
#: composer, which builds the nodes from them, stays in Python to count and bound them.
_FAST = yaml.__with_libyaml__
_EVENTS: tuple[type, ...] = (
    (yaml.cyaml.CParser,) if _FAST else (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser))


class _CatalogLoader(Composer, *_EVENTS, SafeConstructor, Resolver):  # type: ignore[misc]
    def __init__(self, text: str) -> None:
        if _FAST:
            yaml.cyaml.CParser.__init__(self, text)
        else:
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.depth = 0
        #: Values so far in the document, aliases expanded, and those the aliases stood for:
        #: checked as they grow, so a bomb is refused at its alias, not at the file's end.
        self.total = 0
        self.aliased = 0
        #: node id -> values it stands for, aliases expanded; and levels of nesting it holds.
        self.values: dict[int, int] = {}
        self.height: dict[int, int] = {}
        self.node_paths: dict[int, tuple[Any, ...]] = {}
        self.key_lines: dict[tuple[Any, ...], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self.values:
                raise ComposerError(None, None, f"the alias *{event.anchor} is inside the value "
                                    "it refers to (a recursive alias)", event.start_mark)
            if self.depth + self.height[id(node)] > MAX_DEPTH:
                raise ComposerError(None, None, f"the alias *{event.anchor} nests values more "
                                    f"than {MAX_DEPTH} levels deep", event.start_mark)
            self._count(self.values[id(node)], event.start_mark, f"the alias *{event.anchor}",
                        aliased=True)
            return node
        self.depth += 1
        start = self.peek_event().start_mark
        if self.depth > MAX_DEPTH:
            raise ComposerError(None, None, f"lists and mappings are nested more than {MAX_DEPTH} "
                                "levels deep", start)
        self._count(1, start, "this value")
        node = super().compose_node(parent, index)
        self.depth -= 1
        children = _children(node)
        self.values[id(node)] = 1 + sum(self.values[id(child)] for child in children)
        self.height[id(node)] = 1 + max((self.height[id(child)] for child in children), default=0)
        return node

    def _count(self, values: int, mark: yaml.Mark, what: str, aliased: bool = False) -> None:
        self.total += values
        if aliased:
            self.aliased += values
            if self.aliased > MAX_ALIASED_VALUES:
                raise ComposerError(None, None, f"{what} takes the values repeated by aliases past "
                                    f"{MAX_ALIASED_VALUES} (a YAML alias bomb?)", mark)
        if self.total > MAX_VALUES:
            raise ComposerError(None, None, f"{what} takes the document past {MAX_VALUES} values "
                                f"({self.aliased} of them repeated by aliases)", mark)

    def construct_document(self, node: yaml.Node) -> Any:
        # Map nodes to key paths before constructing, so errors can name the key path.
        _index_paths(node, (), self.node_paths)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # int('9' * 5000), 2001-13-45
            raise ConstructorError(None, None, f"cannot read the value {_excerpt(node)}: {exc}",
                                   node.start_mark) from None


def _excerpt(node: yaml.Node) -> str:
    text = str(node.value) if isinstance(node, yaml.ScalarNode) else node.tag
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _mapping(loader: _CatalogLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    parent = loader.node_paths.get(id(node), ())
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor`: its keys may be overridden here (construct_mapping merges)
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise ConstructorError(None, None, f"{_loc(parent) or 'the top level'}: a key must be "
                                   f"a name, not a {kind} (a complex key `? ...`)",
                                   key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise ConstructorError(
                None,
                None,
                f"{_loc((*parent, str(key)))}: duplicate key {key!r} (first defined on line {first})",
                key_node.start_mark,
            )
        seen[key] = key_node
        loader.key_lines.setdefault((*parent, key), key_node.start_mark.line + 1)
    return loader.construct_mapping(node, deep=deep)  # type: ignore[no-untyped-call]


_CatalogLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _read_text(path: Path) -> str:
    """The file as text: at most MAX_BYTES of strict UTF-8."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            # A regular file is judged by its size before reading; a pipe or device by
            # reading one byte more than allowed.
            data = b"" if size > MAX_BYTES else file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    if size > MAX_BYTES or len(data) > MAX_BYTES:
        found = f"is {human_bytes(size)}" if size > MAX_BYTES else "has more than that"
        raise YamlError(f"{path.name}: a catalog may have at most {human_bytes(MAX_BYTES)} and "
                        f"this file {found} (a real catalog is a few KB)")
    if data.startswith(_UTF16_BOMS):
        raise YamlError(f"{path.name}:1: the file is UTF-16 text; save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path.name}:{_line_at(data, exc.start)}: not UTF-8 text (byte "
                        f"0x{data[exc.start]:02x}); save the file as UTF-8") from None
    if "\0" in text:
        raise YamlError(f"{path.name}:{_line_at(data, data.index(0))}: a NUL byte: not UTF-8 "
                        "text (UTF-16 without a byte order mark?); save the file as UTF-8")
    return text


def _line_at(data: bytes | str, offset: int) -> int:
    return data[:offset].count("\n" if isinstance(data, str) else b"\n") + 1


def load_yaml(path: Path) -> YamlDocument:
    """Parse a YAML file; errors name the file, the line and (for keys) the key path."""
    text = _read_text(path)
    try:
        loader = _CatalogLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:  # libyaml: position in the UTF-8 bytes
        line = _line_at(text.encode() if _FAST else text, exc.position)
        raise YamlError(f"{path.name}:{line}: the character U+{exc.character:04X} is not "
                        f"allowed in YAML ({exc.reason})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        raise YamlError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{path.name}: {exc}") from None
    return YamlDocument(data, loader.key_lines)
