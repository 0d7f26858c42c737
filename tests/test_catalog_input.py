"""layerbot.yml fails fast and clearly on any input: bytes, YAML shapes, sizes, names."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.catalog import NAME_PATTERN, CatalogError, load_catalog
from tests.conftest import BASIC_CATALOG

#: A 1.4 KB "billion laughs": 9 levels of 9 aliases, 9^9 (387 million) strings once expanded.
_LOL = "\n".join(
    ['      a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)])
ALIAS_BOMB = BASIC_CATALOG.replace("    description: Windows 10 with Office\n",
                                   "    description:\n" + _LOL + "\n")


def problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return info.value.problems


def write_bytes(catalog_dir: Path, data: bytes) -> Path:
    path = catalog_dir / "layerbot.yml"
    path.write_bytes(data)
    return path


def test_utf16_and_latin1_files_name_the_encoding_and_line(catalog_dir: Path) -> None:
    assert problems(write_bytes(catalog_dir, BASIC_CATALOG.encode("utf-16"))) == [
        "layerbot.yml:1: the file is UTF-16 text; save it as UTF-8"]
    latin1 = BASIC_CATALOG.replace("Windows 10 with Office", "Windows 10 für Büro").encode("latin-1")
    assert problems(write_bytes(catalog_dir, latin1)) == [
        "layerbot.yml:13: not UTF-8 text (byte 0xfc); save the file as UTF-8"]
    no_bom = BASIC_CATALOG.encode("utf-16-le")
    assert problems(write_bytes(catalog_dir, no_bom)) == [
        "layerbot.yml:1: a NUL byte: not UTF-8 text (UTF-16 without a byte order mark?); "
        "save the file as UTF-8"]


def test_a_control_character_names_its_line(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("Windows 10 with Office", "Windows\x0110")
    (found,) = problems(write_catalog(text))
    assert found.startswith("layerbot.yml:13: the character U+0001 is not allowed in YAML")


def test_a_complex_key_is_refused_with_its_line(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("templates:\n", "templates:\n  ? [a, b]\n  : {}\n")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:12: templates: a key must be a name, not a list (a complex key `? ...`)"]
    text = BASIC_CATALOG.replace("  office: {kind", "  ? {x: 1}\n  : 1\n  office: {kind")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:3: layers: a key must be a name, not a mapping (a complex key `? ...`)"]


@pytest.mark.parametrize("nested", [
    "[" * 5000 + "]" * 5000,       # flow
    "\n" + "- " * 5000 + "x",      # block, one level per "- "
    "\n" + "".join("  " * i + f"k{i}:\n" for i in range(40)),  # block, by indentation
])
def test_deep_nesting_is_refused_with_its_line(write_catalog: Callable[[str], Path],
                                               nested: str) -> None:
    (found,) = problems(write_catalog(BASIC_CATALOG + f"extras: {nested}\n"))
    match = re.fullmatch(r"layerbot\.yml:(\d+): (.*)", found)
    assert match and int(match[1]) >= 23, found  # extras is on line 23; where it got too deep
    assert "nest" in match[2], found


def test_values_python_cannot_hold_name_their_line(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("max_parallel: 2", "max_parallel: " + "9" * 5000)
    (found,) = problems(write_catalog(text))
    assert found.startswith("layerbot.yml:21: cannot read the value '999"), found
    text = BASIC_CATALOG.replace("description: Windows 10 with Office", "description: 2001-13-45")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:13: cannot read the value '2001-13-45': month must be in 1..12"]


def test_an_alias_bomb_is_refused_at_once(write_catalog: Callable[[str], Path]) -> None:
    path = write_catalog(ALIAS_BOMB)
    assert path.stat().st_size < 1500
    started = time.monotonic()
    (found,) = problems(path)
    assert time.monotonic() - started < 5  # the issue asks for 1 s; today it runs out of memory
    assert found.startswith("layerbot.yml:")
    assert "the alias *a4 takes the values repeated by aliases past 100000 (a YAML alias bomb?)" in found


@pytest.mark.timeout(60)
def test_a_big_honest_catalog_under_the_size_cap_loads(write_catalog: Callable[[str], Path]) -> None:
    """9,000 layers and 6,000 templates in flow style, no alias: ~150,000 values in under
    1 MiB. Only values repeated by aliases are budgeted; the size cap bounds the others."""
    layers = "".join(f"  l{i}: {{kind: app, source: layers/os.tar}}\n" for i in range(9000))
    templates = "".join(f"  t{i}: {{os_layer: base-os, app_layers: [l{i}], connector: folder, "
                        f"disk: {{size_gib: 1}}}}\n" for i in range(6000))
    text = (f"layers:\n  base-os: {{kind: os, source: layers/os.tar}}\n{layers}"
            f"connectors:\n  folder: {{type: local, path: ./published}}\ntemplates:\n{templates}")
    path = write_catalog(text)
    assert 800_000 < path.stat().st_size < 1 << 20
    catalog = load_catalog(path)
    assert (len(catalog.layers), len(catalog.templates)) == (9001, 6000)


def test_recursive_and_deep_aliases_are_refused(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("description: Windows 10 with Office", "description: &d [*d]")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:13: the alias *d is inside the value it refers to (a recursive alias)"]
    deep = "[" * 25 + "]" * 25  # 28 levels from the top: allowed
    text = BASIC_CATALOG.replace("description: Windows 10 with Office",
                                 f"description: &d {deep}\n    icon: [[[[[*d]]]]]")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:14: the alias *d nests values more than 32 levels deep"]


def test_a_file_over_the_size_limit_is_refused_before_reading(catalog_dir: Path) -> None:
    path = catalog_dir / "layerbot.yml"
    with path.open("ab") as file:
        file.truncate(40 << 20)  # sparse: 40 MiB of NULs after the catalog
    assert problems(path) == ["layerbot.yml: a catalog may have at most 1 MiB and this file "
                              "is 40 MiB (a real catalog is a few KB)"]


def test_names_must_be_strings_of_the_pattern(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("  office: {kind: app, source: layers/office}\n",
                                 "  office: {kind: app, source: layers/office}\n"
                                 "  on: {kind: app, source: layers/office}\n"
                                 "  ~: {kind: app, source: layers/office}\n"
                                 "  12: {kind: app, source: layers/office}\n")
    text = text.replace("  win10-office:\n", "  ../../escape-tpl:\n")
    rule = f"names must be strings matching {NAME_PATTERN}"
    assert problems(write_catalog(text)) == [
        f"layerbot.yml:4: layers.True: {rule}; YAML read this one as a boolean: True "
        "(write 'on', 'no', '12' in quotes)",
        f"layerbot.yml:5: layers.None: {rule}; YAML read this one as an empty value "
        "(write 'on', 'no', '12' in quotes)",
        f"layerbot.yml:6: layers.12: {rule}; YAML read this one as a number: 12 "
        "(write 'on', 'no', '12' in quotes)",
        f"layerbot.yml:15: templates.../../escape-tpl: {rule}; got '../../escape-tpl'",
    ]


def test_quoted_names_of_the_pattern_load(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("  office:", "  'on':").replace("[office]", "['on']")
    text = text.replace("  win10-office:", "  '12':")
    catalog = load_catalog(write_catalog(text))
    assert list(catalog.templates) == ["12"] and "on" in catalog.layers


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "layers: {}\ntemplates: {}\n",
                                  BASIC_CATALOG.split("templates:")[0]])
def test_a_catalog_without_templates_is_an_error_with_an_example(
        write_catalog: Callable[[str], Path], text: str) -> None:
    (found,) = problems(write_catalog(text))
    assert found.startswith("layerbot.yml: templates: none, so there is nothing to publish")
    assert "templates:\n  base: {os_layer: base-os, connector: folder" in found


def test_problems_stop_at_a_hundred(write_catalog: Callable[[str], Path]) -> None:
    unknown = ", ".join(f"app{i}" for i in range(150))
    found = problems(write_catalog(BASIC_CATALOG.replace("[office]", f"[{unknown}]")))
    assert len(found) == 101
    assert found[-1] == ("layerbot.yml: more problems not shown (only the first 100 are); "
                         "fix these and check again")


def test_paths_the_system_cannot_look_at_name_their_key(write_catalog: Callable[[str], Path],
                                                        catalog_dir: Path) -> None:
    """A name too long for the system (and a folder without permission) makes Path.is_dir()
    raise: each is a problem with its key path, the reason and an excerpt of the value."""
    long_name = "a" * 5000 + ".tar"
    text = BASIC_CATALOG.replace("layers/os.tar", long_name).replace("scripts/setup.sh", long_name)
    found = problems(write_catalog(text))
    excerpt = f"(got '{'a' * 27}...{'a' * 24}.tar')"
    assert found == [
        f"layerbot.yml: layers.base-os.source: cannot look at this path: File name too long {excerpt}",
        f"layerbot.yml: connectors.folder.scripts[0]: cannot look at this path: File name too long "
        f"{excerpt}",
    ]
