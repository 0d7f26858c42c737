"""VM operations: tasks, marking as template, and idempotent removal of partial work."""

from __future__ import annotations

import time
from typing import Any

from adapters.base import PlatformError, PlatformTimeoutError
from adapters.vsphere.faults import fault_message, fault_name
from adapters.vsphere.inventory import all_by_property, props
from adapters.vsphere.ovf import TASK_KEY
from adapters.vsphere.session import VSphereSession
from adapters.vsphere.upload import abort


def wait_task(si: Any, task: Any, what: str, timeout: float = 600.0) -> Any:
    """Block until ``task`` finishes; return its result or raise with vCenter's message."""
    from pyVmomi import vim

    deadline = time.monotonic() + timeout
    while True:
        info = props(si, [task], vim.Task, ["info"])[0]["info"]
        if info.state == "success":
            return info.result
        if info.state == "error":
            raise info.error
        if time.monotonic() > deadline:
            raise PlatformTimeoutError(f"vSphere: {what} did not finish in {timeout:g} s")
        time.sleep(0.2)


def mark_as_template(si: Any, vm: Any) -> None:
    vm.MarkAsTemplate()


def _destroy_sync(si: Any, moid: str) -> bool:
    """Power off and destroy VM ``moid``; False if it does not exist (any more)."""
    from pyVmomi import vim

    vm = vim.VirtualMachine(moid, si._stub)
    try:
        found = props(si, [vm], vim.VirtualMachine, ["runtime.powerState"])
    except Exception as exc:
        if fault_name(exc) == "ManagedObjectNotFound":
            return False
        raise
    if not found:
        return False
    try:
        if found[0].get("runtime.powerState") == "poweredOn":
            wait_task(si, vm.PowerOffVM_Task(), "powering off the VM")
        wait_task(si, vm.Destroy_Task(), "destroying the VM")
    except Exception as exc:
        if fault_name(exc) == "ManagedObjectNotFound":
            return False
        raise
    return True


async def destroy_vm(session: VSphereSession, moid: str, name: str) -> list[str]:
    gone = await session.call(lambda si: _destroy_sync(si, moid), f"removing VM {name}")
    return [f"removed VM {name} ({moid})"] if gone else []


def _marked_vms(si: Any, name: str, task_id: str) -> list[str]:
    """The VMs named ``name`` whose extraConfig names ``task_id`` as their importer."""
    from pyVmomi import vim

    named = all_by_property(si, si.content.rootFolder, vim.VirtualMachine, "name", name)
    found = props(si, named, vim.VirtualMachine, ["config.extraConfig"]) if named else []
    return [values["obj"]._moId for values in found
            if any(option.key == TASK_KEY and option.value == task_id
                   for option in values.get("config.extraConfig") or [])]


async def destroy_marked(session: VSphereSession, name: str, task_id: str) -> list[str]:
    """Destroy the VMs ``task_id`` imported as ``name`` (found without their moref)."""
    moids = await session.call(lambda si: _marked_vms(si, name, task_id),
                               f"finding the VM {name} of task {task_id}", idempotent=True)
    lines: list[str] = []
    for moid in moids:
        lines += await destroy_vm(session, moid, name)
    return lines


async def remove_partial(session: VSphereSession, lease_id: str | None, vm_id: str | None,
                         name: str) -> list[str]:
    """Abort a recorded lease and destroy a recorded VM; returns what was removed."""
    from pyVmomi import vim

    lines: list[str] = []
    name = name or vm_id or ""
    if lease_id:
        stub = await session.call(lambda si: si._stub, "connecting")
        try:
            if await abort(session, vim.HttpNfcLease(lease_id, stub)):
                lines.append(f"aborted the disk upload to vSphere (lease {lease_id})")
        except PlatformError as exc:
            lines.append(f"could not abort lease {lease_id}: {fault_message(exc)}")
    if vm_id:
        lines += await destroy_vm(session, vm_id, name)
    return lines
