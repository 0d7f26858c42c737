"""Every connector type in the adapter registry has a fault run (tests/faults/test_faults_*.py)
or is listed below with the reason it has none yet: a new adapter fails here until it has one."""

from __future__ import annotations

import importlib
from pathlib import Path

from adapters import registry

HERE = Path(__file__).parent
#: connector type -> why tests/faults does not cover it yet (issue 18 tracks each)
NOT_YET_COVERED = {
    "local": "no network peer: its faults are the resource faults (disk full, unwritable dir)",
    "qemu": "no network peer: a local VM",
}


def covered() -> set[str]:
    """Connector types the fault tests publish to (each module's ``COVERS``)."""
    found: set[str] = set()
    for test in sorted(HERE.glob("test_faults_*.py")):
        found |= set(importlib.import_module(f"tests.faults.{test.stem}").COVERS)
    return found


def shipped_types() -> set[str]:
    """The registry's connector types layerbot ships (tests register doubles such as ``fake``)."""
    return {name for name, entry in registry().items() if entry.module.startswith("adapters.")}


def uncovered(types: set[str]) -> set[str]:
    return types - covered() - set(NOT_YET_COVERED)


def test_every_registered_adapter_has_a_fault_run_or_a_reason() -> None:
    types = shipped_types()
    assert not uncovered(types), (
        f"connector types without a fault run in tests/faults: {sorted(uncovered(types))}; add "
        "tests/faults/test_faults_<type>.py (or say why in NOT_YET_COVERED)")
    assert not set(NOT_YET_COVERED) & covered(), "a covered type is still listed as not covered"
    assert set(NOT_YET_COVERED) <= types, "NOT_YET_COVERED names a type the registry no longer has"
    assert covered() >= {"vsphere", "azure", "azure-mcs", "gcp", "nutanix", "xenserver", "hyperv", "pvs"}


def test_a_new_adapter_without_a_fault_run_is_named() -> None:
    # not through adapters.register: a second type on one config model would stay in the
    # catalog's cached connector union and break every later catalog load in the session
    assert uncovered(shipped_types() | {"acme-cloud"}) == {"acme-cloud"}
