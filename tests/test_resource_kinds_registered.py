"""A runner that takes a task over (after its first runner died) reads the task's recorded
resources before anything else of the adapter has run: each adapter's module must register,
when imported, every resource kind its package records, or the task fails with "unknown
resource kind" and its cleanup never runs (the chaos runs found gcp's staging upload so)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import registry

ROOT = Path(__file__).resolve().parents[1]
KIND = re.compile(r'^\s+kind: ClassVar\[str\] = "([^"]+)"', re.M)
SHIPPED = sorted((name, entry.module) for name, entry in registry().items()
                 if entry.module.startswith("adapters."))


def kinds_defined(module: str) -> set[str]:
    """The resource kinds the module's package (or module) defines."""
    path = ROOT / Path(*module.split("."))
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return {kind for f in files for kind in KIND.findall(f.read_text(encoding="utf-8"))}


@pytest.mark.parametrize(("connector_type", "module"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_importing_an_adapter_registers_every_kind_it_records(connector_type: str, module: str) -> None:
    script = (f"import json, importlib; importlib.import_module({module!r}); "
              "from adapters.resources import _KINDS; print(json.dumps(sorted(_KINDS)))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    registered = set(json.loads(out.stdout))
    missing = kinds_defined(module) - registered
    assert not missing, f"{module} ({connector_type}): kinds not registered on import: {sorted(missing)}"
