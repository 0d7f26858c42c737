"""Matching vCenter's deploy/clone events to the published template (no server needed)."""

from __future__ import annotations

from adapters.vsphere.watch import _deployed_from


def _arg(moid: str):  # type: ignore[no-untyped-def]
    from pyVmomi import vim

    return vim.event.VmEventArgument(vm=vim.VirtualMachine(moid), name=moid)


def test_vm_deployed_event_from_our_template() -> None:
    from pyVmomi import vim

    event = vim.event.VmDeployedEvent(srcTemplate=_arg("vm-10"), vm=_arg("vm-42"))
    assert _deployed_from(event, "vm-10")._moId == "vm-42"
    assert _deployed_from(event, "vm-11") is None


def test_vm_cloned_event_from_our_template() -> None:
    from pyVmomi import vim

    event = vim.event.VmClonedEvent(sourceVm=_arg("vm-10"), vm=_arg("vm-43"))
    assert _deployed_from(event, "vm-10")._moId == "vm-43"
    other = vim.event.VmClonedEvent(sourceVm=_arg("vm-7"), vm=_arg("vm-44"))
    assert _deployed_from(other, "vm-10") is None


def test_other_events_are_ignored() -> None:
    from pyVmomi import vim

    assert _deployed_from(vim.event.VmPoweredOnEvent(vm=_arg("vm-10")), "vm-10") is None
