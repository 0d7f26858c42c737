"""Blocking XenAPI work on the objects a publish makes (each function runs on a session's
worker thread, given ``session.xenapi``): look-ups, create, clone, attach and destroy.

A create and what makes its result findable run in one call: a cancel cannot stop a call
under way on a thread, so the object gets its name and ``layerbot-task`` tag before the
coroutine could be cancelled, and cleanup (which waits for the session's call under way)
finds it through the pending resource recorded before the call.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

from adapters.base import NotFoundError
from adapters.xenserver.xen_resources import TASK_TAG, XenVdi, XenVm
from adapters.xenserver.xen_watch import is_gone

NULL = "OpaqueRef:NULL"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def ref_of(getter: Any, uuid: str) -> str | None:
    """``getter(uuid)``; None when xapi knows no such object."""
    try:
        return str(getter(uuid))
    except Exception as exc:
        if is_gone(exc):
            return None
        raise


def find_one(x: Any, cls: str, wanted: str, key: str, where: str) -> str:
    """The ref of the ``cls`` object whose UUID or name_label is ``wanted``; a missing or
    ambiguous name is a NotFoundError naming the connector key, the value and the count."""
    api = getattr(x, cls)
    if _UUID.fullmatch(wanted):
        ref = ref_of(api.get_by_uuid, wanted)
        if ref is not None:
            return ref
    refs = list(api.get_by_name_label(wanted))
    if not refs:
        raise NotFoundError(f"{where}: {key}: no {cls} named {wanted!r}")
    if len(refs) > 1:
        raise NotFoundError(f"{where}: {key}: {len(refs)} {cls} objects are named {wanted!r}; "
                            "give a unique name or the UUID")
    return str(refs[0])


def create_vdi(x: Any, record: dict[str, Any]) -> tuple[str, str]:
    """``VDI.create`` (``record`` carries the name and tag) and the new disk's UUID."""
    vdi = x.VDI.create(record)
    return vdi, str(x.VDI.get_uuid(vdi))


def clone_vm(x: Any, template: str, name: str, task_id: str) -> tuple[str, str]:
    """``VM.clone``, tagged with the task at once (a clone inherits the source's
    other_config, a tag included), and the clone's UUID."""
    vm = x.VM.clone(template, name)
    x.VM.remove_from_other_config(vm, TASK_TAG)
    x.VM.add_to_other_config(vm, TASK_TAG, task_id)
    return vm, str(x.VM.get_uuid(vm))


def make_vm(x: Any, vm: str) -> None:
    """A clone of a template is a template: provisioned (without the template's own disk
    list: the uploaded disk is the VM's) and made a VM. A clone of a VM has copies of its
    disks: the one at userdevice 0 is dropped, the uploaded disk takes its place."""
    if x.VM.get_is_a_template(vm):
        x.VM.remove_from_other_config(vm, "disks")
        x.VM.provision(vm)
        x.VM.set_is_a_template(vm, False)
    for vbd in x.VM.get_VBDs(vm):
        if x.VBD.get_userdevice(vbd) == "0":
            vdi = x.VBD.get_VDI(vbd)
            x.VBD.destroy(vbd)
            if vdi != NULL:
                x.VDI.destroy(vdi)


def attach(x: Any, vm: str, vdi: str, network: str) -> None:
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "unpluggable": False, "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    devices = {int(x.VIF.get_device(vif)) for vif in x.VM.get_VIFs(vm)}
    device = next(n for n in range(len(devices) + 1) if n not in devices)
    x.VIF.create({"device": str(device), "network": network, "VM": vm, "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})


def halted_after_a_start(x: Any, vm: str, since: float) -> bool:
    """True when the VM is Halted now and was started at or after ``since``
    (VM_metrics.start_time, whole seconds in UTC; a VM never started has the epoch). The
    state is read again here: a Halted report may be older than a start."""
    if x.VM.get_power_state(vm) != "Halted":
        return False
    metrics = x.VM.get_metrics(vm)
    if metrics == NULL:
        return False
    text = str(x.VM_metrics.get_start_time(metrics)).rstrip("Z")
    started = calendar.timegm(time.strptime(text, "%Y%m%dT%H:%M:%S"))
    return started >= int(since)


def destroy_vm(x: Any, vm: XenVm) -> list[str]:
    refs = [ref_of(x.VM.get_by_uuid, vm.uuid)] if vm.uuid else _pending_vms(x, vm)
    removed = []
    for ref in refs:
        if ref is not None:
            removed += _destroy_vm_ref(x, ref, vm.describe())
    return removed


def _pending_vms(x: Any, vm: XenVm) -> list[str]:
    """The clones a pending XenVm may stand for: named as the VM and tagged with its task,
    or not tagged yet (no tag, or the one inherited from the template)."""
    inherited = None
    if vm.template_uuid and (template := ref_of(x.VM.get_by_uuid, vm.template_uuid)):
        inherited = x.VM.get_other_config(template).get(TASK_TAG)
    found = []
    for ref in x.VM.get_by_name_label(vm.name):
        if x.VM.get_uuid(ref) == vm.template_uuid:
            continue
        if x.VM.get_other_config(ref).get(TASK_TAG) in {vm.task_id, None, inherited}:
            found.append(str(ref))
    return found


def _destroy_vm_ref(x: Any, ref: str, described: str) -> list[str]:
    if x.VM.get_power_state(ref) != "Halted":
        x.VM.hard_shutdown(ref)
    removed = []
    for vbd in x.VM.get_VBDs(ref):
        vdi = x.VBD.get_VDI(vbd)
        kind = x.VBD.get_type(vbd)
        x.VBD.destroy(vbd)
        if kind == "Disk" and vdi != NULL:
            label = x.VDI.get_name_label(vdi)
            x.VDI.destroy(vdi)
            removed.append(f"XenServer disk {label}")
    for vif in x.VM.get_VIFs(ref):
        x.VIF.destroy(vif)
    x.VM.destroy(ref)
    return [described, *removed]


def destroy_vdi(x: Any, vdi: XenVdi) -> list[str]:
    if vdi.uuid:
        refs = [ref_of(x.VDI.get_by_uuid, vdi.uuid)]
    else:  # pending: the disk named as recorded and tagged with its task
        refs = [ref for ref in x.VDI.get_by_name_label(vdi.name)
                if x.VDI.get_other_config(ref).get(TASK_TAG) == vdi.task_id]
    removed = []
    for ref in refs:
        if ref is not None:
            x.VDI.destroy(ref)
            removed.append(vdi.describe())
    return removed
