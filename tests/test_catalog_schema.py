"""``layerbot schema``: the JSON Schema of layerbot.yml, from the catalog's pydantic models.
It takes the bundled demo catalogs and every catalog a test loads (tests/conftest.py), and
refuses what the loader refuses for the same reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import adapters
import bot.catalog
from bot.catalog import CatalogError, load_catalog
from bot.catalog_schema import catalog_schema
from bot.cli.commands import main
from bot.yamlfile import load_yaml
from tests.catalog_schema_check import ORIGINAL_LOAD_CATALOG, schema_errors
from tests.conftest import BASIC_CATALOG

DEMO = Path(__file__).parent.parent / "examples" / "demo"


def test_the_command_prints_a_valid_schema_with_a_union_of_connectors_by_type() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed == catalog_schema()
    union = printed["properties"]["connectors"]["anyOf"][0]["additionalProperties"]
    assert set(union["discriminator"]["mapping"]) == set(adapters.known_types())
    assert printed["$defs"]["LocalConnector"]["properties"]["type"]["const"] == "local"


@pytest.mark.parametrize("name", ["layerbot.yml", "layerbot-qemu.yml"])
def test_the_bundled_demo_catalogs_are_valid(name: str) -> None:
    assert schema_errors(load_yaml(DEMO / name).data) == []


def test_the_tests_basic_catalog_is_valid_and_loads_are_checked(catalog_dir: Path) -> None:
    assert schema_errors(load_yaml(catalog_dir / "layerbot.yml").data) == []
    assert bot.catalog.load_catalog is not ORIGINAL_LOAD_CATALOG  # every test's loads are checked too
    load_catalog(catalog_dir / "layerbot.yml")


def test_anchors_and_merge_keys_are_validated_expanded(write_catalog: Callable[[str], Path]) -> None:
    path = write_catalog(BASIC_CATALOG.replace("runner:", """\
  win11-office:
    <<: &office {os_layer: base-os, connector: folder, disk: {size_gib: 1}}
    description: the same, once more
runner:"""))
    load_catalog(path)
    assert schema_errors(load_yaml(path).data) == []


@pytest.mark.parametrize(("change", "refused_at"), [
    (("format: qcow2", "format: vhd2"), "connectors.folder.format"),  # a value of no format
    (("    disk: {size_gib: 1}\n", ""), "templates.win10-office"),  # a required key is missing
    (("size_gib: 1", "size_gib: big"), "templates.win10-office.disk.size_gib"),  # the wrong type
    (("size_gib: 1", "size_gib: 4096"), "templates.win10-office.disk.size_gib"),  # out of range
    (("icon:", "colour:"), "templates.win10-office"),  # an unknown key
    (("max_parallel: 2", "max_parallel: [2]"), "runner.max_parallel"),
    (("  office: {kind: app", "  Office: {kind: app"), "layers"),  # a name that is no name
])
def test_a_broken_catalog_is_refused_where_the_loader_refuses_it(
        change: tuple[str, str], refused_at: str, write_catalog: Callable[[str], Path]) -> None:
    assert change[0] in BASIC_CATALOG
    path = write_catalog(BASIC_CATALOG.replace(*change))
    with pytest.raises(CatalogError):
        load_catalog(path)
    errors = schema_errors(load_yaml(path).data)
    assert errors and all(e.startswith(refused_at) for e in errors), errors


def test_an_unknown_connector_type_is_one_error_naming_the_known_ones(
        write_catalog: Callable[[str], Path]) -> None:
    path = write_catalog(BASIC_CATALOG.replace("type: local", "type: localfolder"))
    with pytest.raises(CatalogError, match="unknown connector type 'localfolder'"):
        load_catalog(path)
    errors = schema_errors(load_yaml(path).data)
    assert f"connectors.folder.type: 'localfolder' is not one of {adapters.known_types()}" in errors


def test_settings_the_loader_reads_in_any_case_are_valid_in_any_case() -> None:
    """Azure's os_state and os_type are capitalised at load ("generalized" is what the docs write)."""
    settings = {"type": "azure", "subscription_id": "00000000-0000-0000-0000-000000000000",
                "tenant_id": "contoso.onmicrosoft.com", "resource_group": "rg", "location": "westeurope",
                "os_state": "generalized", "os_type": "LINUX"}
    config = adapters.config_model("azure").model_validate(settings)
    assert (config.os_state, config.os_type) == ("Generalized", "Linux")  # type: ignore[attr-defined]
    assert schema_errors({"connectors": {"az": settings}}) == []
    assert schema_errors({"connectors": {"az": {**settings, "os_state": "frozen"}}}) != []
