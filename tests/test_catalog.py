from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.catalog import CatalogError, load_catalog
from tests.conftest import BASIC_CATALOG


def problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return info.value.problems


def test_valid_catalog_resolves_paths_relative_to_the_file(catalog_dir: Path) -> None:
    cat = load_catalog(catalog_dir / "layerbot.yml")
    assert cat.layers["office"].source == catalog_dir / "layers" / "office"
    conn = cat.connectors["folder"]
    assert conn.path == catalog_dir / "published"  # type: ignore[attr-defined]
    assert conn.scripts == [catalog_dir / "scripts" / "setup.sh"]
    assert [n for n, _ in cat.layers_of(cat.templates["win10-office"])] == ["base-os", "office", "vda"]
    assert cat.runner.max_parallel == 2


def test_duplicate_key_is_an_error(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("  office: {kind: app, source: layers/office}\n",
                                 "  office: {kind: app, source: layers/office}\n"
                                 "  office: {kind: app, source: layers/office}\n")
    found = problems(write_catalog(text))
    assert found == [
        "layerbot.yml:4: layers.office: duplicate key 'office' (first defined on line 3)"]


def test_anchors_and_merge_keys_work_and_may_override(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace(
        "connectors:\n  folder:\n",
        "connectors:\n  folder: &folder\n").replace(
        "templates:\n",
        "  folder-vmdk:\n    <<: *folder\n    format: vmdk\n"
        "templates:\n")
    catalog = load_catalog(write_catalog(text))
    assert catalog.connectors["folder-vmdk"].format == "vmdk"  # type: ignore[attr-defined]
    assert catalog.connectors["folder-vmdk"].scripts == catalog.connectors["folder"].scripts


def test_duplicate_key_on_one_line_names_the_key_path(
        write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("disk: {size_gib: 1}", "disk: {size_gib: 1, size_gib: 2}")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:19: templates.win10-office.disk.size_gib: duplicate key 'size_gib' "
        "(first defined on line 19)"
    ]


def test_duplicate_key_in_a_list_item_and_at_the_top(
        write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("scripts: [scripts/setup.sh]",
                                 "scripts: [{a: 1, a: 2}]")
    assert problems(write_catalog(text)) == [
        "layerbot.yml:10: connectors.folder.scripts[0].a: duplicate key 'a' "
        "(first defined on line 10)"
    ]
    assert problems(write_catalog(BASIC_CATALOG + "runner: {}\n")) == [
        "layerbot.yml:23: runner: duplicate key 'runner' (first defined on line 20)"
    ]


def test_unknown_app_layer_suggests_the_close_name(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("app_layers: [office]", "app_layers: [office, ofice]")
    assert problems(write_catalog(text)) == [
        "layerbot.yml: templates.win10-office.app_layers[1]: "
        "no layer named 'ofice' (did you mean 'office'?)"
    ]


def test_layer_in_the_wrong_slot(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("os_layer: base-os", "os_layer: office")
    assert problems(write_catalog(text)) == [
        "layerbot.yml: templates.win10-office.os_layer: layer 'office' is an app layer, "
        "not an os layer"
    ]


def test_a_filesystem_the_connector_cannot_boot(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("  folder:\n    type: local\n    path: ./published\n    format: qcow2\n",
                                 "  folder:\n    type: qemu\n    path: ./vms\n")
    text = text.replace("disk: {size_gib: 1}", "disk: {size_gib: 1, filesystem: ntfs}")
    assert problems(write_catalog(text)) == [
        "layerbot.yml: templates.win10-office.disk.filesystem: 'ntfs' cannot be used with "
        "connector 'folder' (type qemu: ext4 only)"
    ]


def test_unknown_connector_and_missing_script(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("connector: folder", "connector: fodler").replace(
        "scripts/setup.sh", "scripts/missing.cmd")
    found = problems(write_catalog(text))
    assert any(p.startswith("layerbot.yml: connectors.folder.scripts[0]: file ")
               and p.endswith("missing.cmd' does not exist (got 'scripts/missing.cmd')")
               for p in found), found
    assert "layerbot.yml: templates.win10-office.connector: no connector named 'fodler' " \
           "(did you mean 'folder'?)" in found


def test_missing_source_and_bad_archive(write_catalog: Callable[[str], Path],
                                        catalog_dir: Path) -> None:
    (catalog_dir / "layers" / "notes.txt").write_text("not a layer")
    text = BASIC_CATALOG.replace("layers/os.tar", "layers/nope.tar").replace(
        "layers/vda.tar.gz", "layers/notes.txt")
    found = problems(write_catalog(text))
    assert found[0].startswith("layerbot.yml: layers.base-os.source: layer source ")
    assert "does not exist" in found[0]
    assert "layers.vda.source" in found[1] and "neither a directory nor a tar" in found[1]


def test_every_problem_is_reported_at_once(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("size_gib: 1", "size_gib: lots").replace(
        "kind: platform", "kind: plattform").replace("format: qcow2", "format: vdi")
    found = problems(write_catalog(text))
    assert len(found) == 3, found
    assert any("connectors.folder.format" in p and "'vdi'" in p for p in found)
    assert any("layers.vda.kind" in p and "'plattform'" in p for p in found)
    assert any("templates.win10-office.disk.size_gib" in p and "'lots'" in p for p in found)


def test_unknown_keys_and_connector_type(write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("type: local", "type: floppy").replace(
        "    icon:", "    colour: blue\n    icon:")
    found = problems(write_catalog(text))
    assert any(p.startswith("layerbot.yml: connectors.folder.type: unknown connector type 'floppy'")
               for p in found), found
    assert "layerbot.yml: templates.win10-office.colour: unknown key" in found
    # the template's connector is declared (if broken), so it is not reported again
    assert not any("templates.win10-office.connector" in p for p in found)


def test_yaml_syntax_error_names_the_line(write_catalog: Callable[[str], Path]) -> None:
    found = problems(write_catalog("layers:\n  a: {kind: os\n"))
    assert len(found) == 1 and found[0].startswith("layerbot.yml:3:")


def test_missing_file(tmp_path: Path) -> None:
    found = problems(tmp_path / "absent.yml")
    assert found[0].startswith(f"{tmp_path / 'absent.yml'}: cannot read")


def test_default_cache_and_work_dirs_are_next_to_the_catalog(
        write_catalog: Callable[[str], Path], catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(BASIC_CATALOG.split("runner:")[0]))
    assert cat.runner.cache_dir == catalog_dir / ".layerbot" / "cache"
    assert cat.runner.work_dir == catalog_dir / ".layerbot" / "work"


def test_schema_and_reference_problems_are_reported_together(
        write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("format: qcow2", "format: qcow3").replace(
        "app_layers: [office]", "app_layers: [ofice]").replace("connector: folder", "connector: g")
    found = problems(write_catalog(text + "extras: {}\n"))
    assert any("connectors.folder.format" in p and "'qcow3'" in p for p in found), found
    assert any("app_layers[0]: no layer named 'ofice' (did you mean 'office'?)" in p for p in found)
    assert any("templates.win10-office.connector: no connector named 'g'" in p for p in found)
    assert "layerbot.yml: extras: unknown key (expected one of layers, connectors, templates, " \
           "runner)" in found


def test_script_naming_a_directory(write_catalog: Callable[[str], Path],
                                   catalog_dir: Path) -> None:
    text = BASIC_CATALOG.replace("scripts: [scripts/setup.sh]", "scripts: [scripts]")
    assert problems(write_catalog(text)) == [
        f"layerbot.yml: connectors.folder.scripts[0]: '{catalog_dir / 'scripts'}' is a "
        "directory, not a file (got 'scripts')"
    ]


def test_section_that_is_not_a_mapping_shows_what_was_found(
        write_catalog: Callable[[str], Path]) -> None:
    assert problems(write_catalog("layers: [a]\nconnectors: abc\n")) == [
        "layerbot.yml: layers: must be a mapping of name to settings, got a list: ['a']",
        "layerbot.yml: connectors: must be a mapping of name to settings, got a string: 'abc'",
    ]
    long = "templates: [" + ", ".join(f"t{i}" for i in range(40)) + "]\n"
    (found,) = problems(write_catalog(long))
    assert found.startswith("layerbot.yml: templates: must be a mapping of name to settings, "
                            "got a list: ['t0', 't1',")
    assert found.endswith("...") and len(found) < 140


def test_entry_of_the_wrong_type_says_what_a_mapping_looks_like(
        write_catalog: Callable[[str], Path]) -> None:
    text = BASIC_CATALOG.replace("  office: {kind: app, source: layers/office}\n",
                                 "  office: {kind: app, source: layers/office}\n"
                                 "  notepad: layers/notepad\n  empty:\n")
    text = text.replace("disk: {size_gib: 1}", "disk: big").replace(
        "  folder:\n", "  broken: abc\n  folder:\n")
    assert problems(write_catalog(text)) == [
        "layerbot.yml: layers.notepad: must be a mapping of settings like "
        "{kind: app, source: layers/NAME}, got 'layers/notepad'",
        "layerbot.yml: layers.empty: must be a mapping of settings like "
        "{kind: app, source: layers/NAME}, got an empty value",
        "layerbot.yml: connectors.broken: must be a mapping of settings like "
        "{type: local, path: ./published}, got 'abc'",
        "layerbot.yml: templates.win10-office.disk: must be a mapping of settings like "
        "{size_gib: 20, filesystem: ext4}, got 'big'",
    ]


AZURE_CONNECTORS = """\
  azure:
    type: azure
    subscription_id: 3f2c8a6e-5b1d-4c7e-9a0f-1e2d3c4b5a69
    tenant_id: 8d7c6b5a-4e3f-4a1b-8c9d-0e1f2a3b4c5d
    resource_group: layering
    location: westeurope
    credential: managed_identity
  mcs:
    type: azure-mcs
    subscription_id: 3f2c8a6e-5b1d-4c7e-9a0f-1e2d3c4b5a69
    tenant_id: 8d7c6b5a-4e3f-4a1b-8c9d-0e1f2a3b4c5d
    resource_group: layering
    location: westeurope
    credential: managed_identity
    gallery: layering_gallery
    image_definition: win10-vda
"""


def _with_template(connector: str, size_gib: int) -> str:
    """BASIC_CATALOG with the Azure connectors and a second template on ``connector``."""
    text = BASIC_CATALOG.replace("templates:\n", AZURE_CONNECTORS + "templates:\n")
    return text.replace("runner:\n", f"  big:\n    os_layer: base-os\n    connector: {connector}\n"
                                     f"    disk: {{size_gib: {size_gib}}}\n" + "runner:\n")


@pytest.mark.parametrize("connector", ["azure", "mcs"])
def test_a_disk_over_the_vhd_limit_of_an_azure_connector(
        write_catalog: Callable[[str], Path], connector: str) -> None:
    kind = "azure" if connector == "azure" else "azure-mcs"
    assert problems(write_catalog(_with_template(connector, 2041))) == [
        f"layerbot.yml: templates.big.disk.size_gib: 2041 is over the 2040 GiB that connector "
        f"{connector!r} (type {kind}) takes"]
    assert load_catalog(write_catalog(_with_template(connector, 2040))).templates["big"]


def test_the_limit_of_a_local_connector_follows_its_format(
        write_catalog: Callable[[str], Path]) -> None:
    assert load_catalog(write_catalog(_with_template("folder", 2048))).templates["big"]
    vhd = _with_template("folder", 2048).replace("format: qcow2", "format: vhd-dynamic")
    assert problems(write_catalog(vhd)) == [
        "layerbot.yml: templates.big.disk.size_gib: 2048 is over the 2040 GiB that connector "
        "'folder' (type local) takes"]


def test_the_limit_of_a_xenserver_connector() -> None:
    from adapters import config_model

    assert config_model("xenserver").max_disk_gib == 2040
    assert config_model("gcp").max_disk_gib is None  # no known hard limit below 2048


@pytest.mark.parametrize("connector", ["azure", "mcs"])
def test_a_disk_size_that_is_not_a_whole_number_of_mib_is_refused_at_load(
        write_catalog: Callable[[str], Path], connector: str) -> None:
    """Azure takes a fixed VHD of whole MiB only; sizes are whole GiB in the catalog, so a
    fractional size is refused where it is written, before any compositing."""
    [problem] = problems(write_catalog(_with_template(connector, 1.5)))  # type: ignore[arg-type]
    assert problem.startswith("layerbot.yml: templates.big.disk.size_gib: ")
    assert "1.5" in problem and "integer" in problem


def test_runner_tags_are_validated_at_load(write_catalog: Callable[[str], Path]) -> None:
    def tagged(tags: str) -> Path:
        fmt = "format: qcow2"
        return write_catalog(BASIC_CATALOG.replace(fmt, f"{fmt}\n    runner_tags: {tags}"))

    ok = load_catalog(tagged("[dc-east, win]"))
    assert ok.connectors["folder"].runner_tags == ["dc-east", "win"]
    found = problems(tagged("[dc-east, 'DC East']"))
    assert any(p.startswith("layerbot.yml: connectors.folder.runner_tags") and "'DC East'" in p
               for p in found), found
    found = problems(tagged("[a, a]"))
    assert any("connectors.folder.runner_tags" in p and "'a' is named twice" in p for p in found), found


def test_a_lease_longer_than_any_the_store_keeps_is_refused(write_catalog: Callable[[str], Path]) -> None:
    found = problems(write_catalog(BASIC_CATALOG.replace("lease_seconds: 3", "lease_seconds: 3600")))
    assert len(found) == 1 and "runner.lease_seconds" in found[0] and "600" in found[0], found
