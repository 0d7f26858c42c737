"""Every catalog a test loads successfully must also be valid against ``layerbot schema``
(tests/conftest.py wraps ``load_catalog`` for every test): the schema editors use must never
refuse a catalog layerbot takes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import bot.catalog
from bot.yamlfile import load_yaml

ORIGINAL_LOAD_CATALOG = bot.catalog.load_catalog


@functools.cache
def schema_validator() -> jsonschema.protocols.Validator:
    from bot.catalog_schema import catalog_schema

    schema = catalog_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors under a oneOf/anyOf: those of the branches whose ``type`` (a connector's,
    or null against object) matched, else all."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    matched = [errs for errs in branches.values()
               if not any(e.validator in ("const", "type") and list(e.relative_path) in ([], ["type"])
                          for e in errs)]
    return [leaf for errs in (matched or branches.values()) for e in errs for leaf in _leaves(e)]


def schema_errors(document: Any) -> list[str]:
    """What the schema refuses in a YAML document, each as "key.path: message"."""
    errors = [leaf for e in schema_validator().iter_errors(document) for leaf in _leaves(e)]
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def _checked(path: Path) -> bot.catalog.Catalog:
    catalog = ORIGINAL_LOAD_CATALOG(path)
    if errors := schema_errors(load_yaml(path).data):
        raise AssertionError(f"{path} loads, but `layerbot schema` refuses it: {errors[:5]}")
    return catalog


def wrap_load_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ``load_catalog`` in bot.catalog and in every module that imported it by name."""
    loader: Callable[[Path], bot.catalog.Catalog] = _checked
    for module in list(sys.modules.values()):
        if getattr(module, "load_catalog", None) is ORIGINAL_LOAD_CATALOG:
            monkeypatch.setattr(module, "load_catalog", loader)
