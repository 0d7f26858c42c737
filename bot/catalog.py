"""The catalog (layerbot.yml): layers, connectors, templates and runner settings.

Validated at load with pydantic; every error names the file, the key path and
the bad value, and all errors are reported at once.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import adapters
from adapters.base import AccessConfig, CatalogPath, ConnectorConfig, path_kind
from bot.runner_dirs import with_systemd_defaults
from bot.yamlfile import YamlError, load_yaml

LayerKind = Literal["os", "app", "platform"]
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")

#: Every layer, connector and template name: a file and folder name on every platform (a
#: template name becomes a folder at local and qemu targets) and a word in Slack commands.
NAME_PATTERN = "[a-z0-9][a-z0-9._-]{0,62}"
_NAME = re.compile(NAME_PATTERN)
_NAMED_SECTIONS = ("layers", "connectors", "templates")
#: Problems reported at once: enough for any honest edit, and it bounds the work (each
#: unknown name is compared with every declared one) and the output for a generated file.
MAX_PROBLEMS = 100


class CatalogError(ValueError):
    """One or more problems in layerbot.yml; ``problems`` lists them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: LayerKind
    source: CatalogPath
    description: str = ""

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: Path) -> Path:
        kind = path_kind(value)
        if kind == "dir":
            return value
        if kind is None:
            raise ValueError(f"layer source {str(value)!r} does not exist")
        if not value.name.endswith(_TAR_SUFFIXES):
            raise ValueError(
                f"layer source {str(value)!r} is neither a directory nor a tar archive "
                f"({', '.join(_TAR_SUFFIXES)})"
            )
        return value


class DiskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size_gib: int = Field(ge=1, le=2048, strict=True)
    filesystem: Literal["ext4", "ntfs"] = "ext4"


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    icon: str = ":package:"
    os_layer: str
    app_layers: list[str] = Field(default_factory=list)
    platform_layer: str | None = None
    connector: str
    disk: DiskSettings
    access: AccessConfig | None = None


# The numbers are strict (no "2" for 2): the JSON Schema editors check against says so, and a
# quoted number in a config file is more likely a slip than a wish.
class RunnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_parallel: int = Field(default=2, ge=1, le=64, strict=True)
    #: Where composited artifacts are cached (relative to the catalog file). Unset, under
    #: systemd's $CACHE_DIRECTORY (work_dir: $STATE_DIRECTORY) when set (bot/runner_dirs.py).
    cache_dir: CatalogPath = Field(default=Path(".layerbot/cache"), validate_default=True)
    work_dir: CatalogPath = Field(default=Path(".layerbot/work"), validate_default=True)
    #: Build in RAM (a tmpfs) when the layers take at most half the free memory: the staging
    #: tree and raw disk are temporary, and writing them to a disk costs more than the build.
    ram_scratch: bool = True
    #: The tmpfs folder for that (null: /dev/shm).
    ram_scratch_dir: CatalogPath | None = None
    #: After each composite, least recently used cache entries are removed until the cache
    #: occupies at most this much (GiB of disk blocks); null keeps everything.
    cache_max_gib: float | None = Field(default=50.0, gt=0, strict=True)
    #: ... and until the cache's file system has this much free (0: no such rule).
    cache_min_free_gib: float = Field(default=5.0, ge=0, strict=True)
    #: at most bot.store.sql_store.MAX_LEASE_SECONDS: a lease ending later is taken for a clock
    #: that stepped back, and expired
    lease_seconds: float = Field(default=30.0, gt=1, le=600, strict=True)
    #: A task whose runner died this many times (crash loop) fails instead of being resumed.
    max_attempts: int = Field(default=8, ge=1, strict=True)
    #: Seconds to wait for the guest to run its scripts and power off.
    watch_timeout: float = Field(default=24 * 3600.0, gt=0, strict=True)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    path: Path
    layers: dict[str, Layer] = Field(default_factory=dict)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    templates: dict[str, Template] = Field(default_factory=dict)
    runner: RunnerSettings

    def template(self, name: str) -> Template:
        try:
            return self.templates[name]
        except KeyError:
            raise KeyError(unknown_name("template", name, self.templates)) from None

    def layers_of(self, template: Template) -> list[tuple[str, Layer]]:
        """The template's layers, lowest priority first."""
        names = [template.os_layer, *template.app_layers]
        if template.platform_layer:
            names.append(template.platform_layer)
        return [(n, self.layers[n]) for n in names]


def unknown_name(what: str, name: str, known: Any) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"no {what} named {name!r}{hint}"


def default_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("LAYERBOT_CONFIG")
    return Path(env) if env else Path("layerbot.yml")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _excerpt_repr() -> reprlib.Repr:
    excerpt = reprlib.Repr()  # Python 3.11: limits are attributes, not arguments
    excerpt.maxlevel, excerpt.maxdict, excerpt.maxlist = 3, 16, 16  # at most 16**3 items
    excerpt.maxstring = excerpt.maxother = excerpt.maxlong = 60
    return excerpt


_EXCERPT = _excerpt_repr()


def _value_repr(value: Any) -> str:
    text = _EXCERPT.repr(value)  # bounded work and length, whatever the value's size
    return text if len(text) <= 60 else text[:57] + "..."


def _found(value: Any) -> str:
    """What YAML gave instead of a mapping, for messages: "a list: ['a']"."""
    if value is None:
        return "an empty value"
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list"}.get(type(value), _a(type(value).__name__))
    return f"{kind}: {_value_repr(value)}"


#: An example of each settings mapping, for "must be a mapping" messages.
_EXAMPLES = {
    "Layer": "{kind: app, source: layers/NAME}",
    "Template": "{os_layer: NAME, connector: NAME, disk: {size_gib: 20}}",
    "DiskSettings": "{size_gib: 20, filesystem: ext4}",
    "AccessConfig": "{users: [U123], approval: none}",
    "RunnerSettings": "{max_parallel: 2}",
}
_CONNECTOR_EXAMPLE = "{type: local, path: ./published}"


def _not_a_mapping(example: str | None, value: Any) -> str:
    like = f" like {example}" if example else ""
    got = "an empty value" if value is None else _value_repr(value)
    return f"must be a mapping of settings{like}, got {got}"


def _pydantic_problems(fname: str, prefix: tuple[Any, ...], exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = _loc(prefix + tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            cls = (err.get("ctx") or {}).get("class_name")
            msg = _not_a_mapping(_EXAMPLES.get(cls) if cls else None, err.get("input"))
        elif err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {_value_repr(err['input'])})"
        problems.append(f"{fname}: {loc}: {msg}")
    return problems


def _section(fname: str, raw: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    section = raw.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append(f"{fname}: {key}: must be a mapping of name to settings, "
                        f"got {_found(section)}")
        return {}
    return section


def _entries(
    fname: str, key: str, section: dict[str, Any], model: type[BaseModel],
    context: dict[str, Any], problems: list[str],
) -> dict[str, Any]:
    """Validate each named entry on its own, so one bad entry hides no other problem."""
    out: dict[str, Any] = {}
    for name, settings in section.items():
        try:
            out[name] = model.model_validate(settings, context=context)
        except ValidationError as exc:
            problems += _pydantic_problems(fname, (key, str(name)), exc)
    return out


def _connectors(
    fname: str, section: dict[str, Any], context: dict[str, Any], problems: list[str]
) -> dict[str, ConnectorConfig]:
    out: dict[str, ConnectorConfig] = {}
    for name, settings in section.items():
        loc = f"connectors.{name}"
        if not isinstance(settings, dict):
            problems.append(f"{fname}: {loc}: {_not_a_mapping(_CONNECTOR_EXAMPLE, settings)}")
            continue
        if "type" not in settings:
            problems.append(f"{fname}: {loc}.type: missing (one of {adapters.known_types()})")
            continue
        try:
            model = adapters.config_model(str(settings["type"]))
        except adapters.UnknownConnectorType as exc:
            problems.append(f"{fname}: {loc}.type: {exc}")
            continue
        out |= _entries(fname, "connectors", {name: settings}, model, context, problems)
    return out


def _name_problems(fname: str, sections: dict[str, dict[Any, Any]],
                   key_lines: dict[tuple[Any, ...], int]) -> list[str]:
    problems = []
    for section, entries in sections.items():
        for name in entries:
            if isinstance(name, str) and _NAME.fullmatch(name):
                continue
            line = key_lines.get((section, name))
            where = f"{fname}:{line}" if line else fname
            got = (f"got {_value_repr(name)}" if isinstance(name, str)
                   else f"YAML read this one as {_found(name)} (write 'on', 'no', '12' in quotes)")
            problems.append(f"{where}: {section}.{name}: names must be strings matching "
                            f"{NAME_PATTERN}; {got}")
    return problems


#: Shown when the catalog has no templates.
_MINIMAL_CATALOG = """\
layers:
  base-os: {kind: os, source: layers/os/}
connectors:
  folder: {type: local, path: ./published}
templates:
  base: {os_layer: base-os, connector: folder, disk: {size_gib: 4}}"""


def _check_references(
    fname: str, cat: Catalog, declared: dict[str, set[str]], problems: list[str]
) -> None:
    """Check names across sections. An entry that failed its own checks still counts as
    declared (``declared``: section -> names), so it is not reported twice."""
    slots: list[tuple[str, str, LayerKind]]
    for tname, t in cat.templates.items():
        if len(problems) > MAX_PROBLEMS:
            return
        slots = [(f"templates.{tname}.os_layer", t.os_layer, "os")]
        slots += [(f"templates.{tname}.app_layers[{i}]", n, "app") for i, n in enumerate(t.app_layers)]
        if t.platform_layer is not None:
            slots.append((f"templates.{tname}.platform_layer", t.platform_layer, "platform"))
        for loc, lname, kind in slots:
            if len(problems) > MAX_PROBLEMS:
                return
            layer = cat.layers.get(lname)
            if lname not in declared["layers"]:
                problems.append(
                    f"{fname}: {loc}: {unknown_name('layer', lname, declared['layers'])}")
            elif layer is not None and layer.kind != kind:
                problems.append(
                    f"{fname}: {loc}: layer {lname!r} is {_a(layer.kind)} layer, not {_a(kind)} layer"
                )
        dups = [n for n, count in Counter(t.app_layers).items() if count > 1]
        if dups:
            problems.append(f"{fname}: templates.{tname}.app_layers: {dups[0]!r} is listed twice")
        if t.connector not in declared["connectors"]:
            problems.append(
                f"{fname}: templates.{tname}.connector: "
                f"{unknown_name('connector', t.connector, declared['connectors'])}"
            )
        connector = cat.connectors.get(t.connector)
        if (connector is not None and connector.filesystems is not None
                and t.disk.filesystem not in connector.filesystems):
            problems.append(
                f"{fname}: templates.{tname}.disk.filesystem: {t.disk.filesystem!r} cannot be "
                f"used with connector {t.connector!r} (type {connector.type}: "
                f"{', '.join(connector.filesystems)} only)"
            )
        limit = None if connector is None else connector.disk_limit_gib()
        if connector is not None and limit is not None and t.disk.size_gib > limit:
            problems.append(
                f"{fname}: templates.{tname}.disk.size_gib: {t.disk.size_gib} is over the "
                f"{limit} GiB that connector {t.connector!r} (type {connector.type}) takes"
            )


def _link_connectors(fname: str, cat: Catalog, declared: set[str], problems: list[str]) -> None:
    """Check and link the connectors a connector names (a Provisioning connector's hypervisor)."""
    for cname, connector in cat.connectors.items():
        for ref in connector.references():
            loc = f"{fname}: connectors.{cname}.{ref.key}"
            if ref.name not in declared:
                problems.append(f"{loc}: {unknown_name('connector', ref.name, declared)}")
                continue
            other = cat.connectors.get(ref.name)
            if other is None:
                continue  # it failed its own checks, reported already
            if other.type not in ref.types:
                problems.append(f"{loc}: connector {ref.name!r} is of type {other.type!r}; it must be "
                                f"one of {', '.join(sorted(ref.types))}")
                continue
            refused = connector.link_problems(ref.key, ref.name, other)
            problems += [f"{loc}: {problem}" for problem in refused]
            if not refused:
                connector.link(ref.key, other)


_SECTIONS = ("layers", "connectors", "templates", "runner")


def load_catalog(path: Path) -> Catalog:
    """Load and validate layerbot.yml; raise CatalogError listing every problem at once."""
    fname = path.name
    try:
        document = load_yaml(path)
    except YamlError as exc:
        raise CatalogError([str(exc)]) from None
    raw = {} if document.data is None else document.data
    if not isinstance(raw, dict):
        raise CatalogError([f"{fname}: the top level must be a mapping (layers, connectors, ...)"])
    context = {"base_dir": path.resolve().parent}
    problems = [f"{fname}: {key}: unknown key (expected one of {', '.join(_SECTIONS)})"
                for key in raw if key not in _SECTIONS]
    sections = {key: _section(fname, raw, key, problems) for key in _NAMED_SECTIONS}
    problems += _name_problems(fname, sections, document.key_lines)
    layers = _entries(fname, "layers", sections["layers"], Layer, context, problems)
    connectors = _connectors(fname, sections["connectors"], context, problems)
    templates = _entries(fname, "templates", sections["templates"], Template, context, problems)
    try:
        runner = RunnerSettings.model_validate(with_systemd_defaults(raw.get("runner")), context=context)
    except ValidationError as exc:
        problems += _pydantic_problems(fname, ("runner",), exc)
        runner = RunnerSettings.model_validate({}, context=context)
    cat = Catalog.model_construct(path=path.resolve(), layers=layers, connectors=connectors,
                                  templates=templates, runner=runner)
    declared = {k: set(map(str, v)) for k, v in sections.items()}
    _check_references(fname, cat, declared, problems)
    _link_connectors(fname, cat, declared["connectors"], problems)
    if not problems and not templates:  # when there are other problems, the file is not empty
        problems.append(f"{fname}: templates: none, so there is nothing to publish; a catalog "
                        f"needs at least one layer, connector and template, like this:\n"
                        + _MINIMAL_CATALOG)
    if len(problems) > MAX_PROBLEMS:
        problems[MAX_PROBLEMS:] = [f"{fname}: more problems not shown (only the first "
                                   f"{MAX_PROBLEMS} are); fix these and check again"]
    if problems:
        raise CatalogError(problems)
    return cat
