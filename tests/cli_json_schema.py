"""The documented ``--json`` contract (docs/cli-json.schema.json), for the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "docs" / "cli-json.schema.json").read_text())


def validate(document: Any, definition: str) -> None:
    """Raise jsonschema.ValidationError unless ``document`` is a ``$defs/<definition>``."""
    assert definition in SCHEMA["$defs"], definition
    schema = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
