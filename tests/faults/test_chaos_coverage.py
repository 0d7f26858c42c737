"""Every connector type in the adapter registry has a chaos run (tests/faults/test_chaos_*.py):
a new adapter fails here until it has one."""

from __future__ import annotations

import importlib
from pathlib import Path

from tests.faults.test_fault_coverage import shipped_types

HERE = Path(__file__).parent
#: test_chaos_* modules that publish to no platform
NOT_PLATFORM_RUNS = {"test_chaos_coverage", "test_chaos_harness"}


def covered() -> set[str]:
    """Connector types the chaos tests publish to (each module's ``COVERS``)."""
    found: set[str] = set()
    for test in sorted(HERE.glob("test_chaos_*.py")):
        if test.stem not in NOT_PLATFORM_RUNS:
            found |= set(importlib.import_module(f"tests.faults.{test.stem}").COVERS)
    return found


def uncovered(types: set[str]) -> set[str]:
    return types - covered()


def test_every_registered_adapter_has_a_chaos_run() -> None:
    types = shipped_types()
    assert not uncovered(types), (
        f"connector types without a chaos run in tests/faults: {sorted(uncovered(types))}; add "
        "tests/faults/test_chaos_<type>.py")
    assert covered() >= {"local", "qemu", "vsphere", "azure", "azure-mcs", "gcp", "nutanix",
                         "xenserver", "hyperv", "pvs"}


def test_a_new_adapter_without_a_chaos_run_is_named() -> None:
    assert uncovered(shipped_types() | {"acme-cloud"}) == {"acme-cloud"}
