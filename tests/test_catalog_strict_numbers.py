"""A quoted number in the catalog: the loader and ``layerbot schema`` both refuse it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.catalog import CatalogError
from bot.yamlfile import load_yaml
from tests.catalog_schema_check import ORIGINAL_LOAD_CATALOG, schema_validator


@pytest.mark.parametrize(("old", "new", "key"), [
    ("size_gib: 1", 'size_gib: "1"', "disk.size_gib"),
    ("max_parallel: 2", 'max_parallel: "2"', "runner.max_parallel"),
    ("lease_seconds: 3", 'lease_seconds: "3"', "runner.lease_seconds"),
])
def test_a_quoted_number_is_refused_by_both(old: str, new: str, key: str, catalog_dir: Path,
                                           write_catalog: Callable[[str], Path]) -> None:
    text = (catalog_dir / "layerbot.yml").read_text()
    assert old in text
    path = write_catalog(text.replace(old, new, 1))
    with pytest.raises(CatalogError) as err:
        ORIGINAL_LOAD_CATALOG(path)
    assert any(key in p and "layerbot.yml" in p for p in err.value.problems), err.value.problems
    assert list(schema_validator().iter_errors(load_yaml(path).data))
