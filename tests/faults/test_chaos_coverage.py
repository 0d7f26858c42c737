"""Every connector type in the adapter registry has a chaos run (tests/faults/test_chaos_*.py)
or is listed below with the reason it has none yet: a new adapter fails here until it has one."""

from __future__ import annotations

import importlib
from pathlib import Path

from tests.faults.test_fault_coverage import shipped_types

HERE = Path(__file__).parent
#: test_chaos_* modules that publish to no platform
NOT_PLATFORM_RUNS = {"test_chaos_coverage", "test_chaos_harness"}
#: connector type -> why tests/faults has no chaos run for it yet (issue 18 tracks each)
NOT_YET_COVERED = {
    "azure": "Azurite and the ARM double: the workers need the double's static token and CA in "
             "tests/faults/chaos_worker.py, and a guest VM in the double for the watch: next",
    "azure-mcs": "as azure (the same ARM double, plus the gallery): next",
}


def covered() -> set[str]:
    """Connector types the chaos tests publish to (each module's ``COVERS``)."""
    found: set[str] = set()
    for test in sorted(HERE.glob("test_chaos_*.py")):
        if test.stem not in NOT_PLATFORM_RUNS:
            found |= set(importlib.import_module(f"tests.faults.{test.stem}").COVERS)
    return found


def uncovered(types: set[str]) -> set[str]:
    return types - covered() - set(NOT_YET_COVERED)


def test_every_registered_adapter_has_a_chaos_run_or_a_reason() -> None:
    types = shipped_types()
    assert not uncovered(types), (
        f"connector types without a chaos run in tests/faults: {sorted(uncovered(types))}; add "
        "tests/faults/test_chaos_<type>.py (or say why in NOT_YET_COVERED)")
    assert not set(NOT_YET_COVERED) & covered(), "a covered type is still listed as not covered"
    assert set(NOT_YET_COVERED) <= types, "NOT_YET_COVERED names a type the registry no longer has"
    assert "local" in covered()


def test_a_new_adapter_without_a_chaos_run_is_named() -> None:
    assert uncovered(shipped_types() | {"acme-cloud"}) == {"acme-cloud"}
