"""What a Hyper-V publish records (see adapters/resources.py for the lifetimes)."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource


class HypervDisk(Resource):
    """The disk copied to the share (the VM's disk once the publish succeeded)."""

    kind: ClassVar[str] = "hyperv.disk"
    #: where it was copied to (UNC) and the same file as the host sees it
    unc: str
    local_path: str

    def describe(self) -> str:
        return f"Hyper-V disk {self.unc}"


class HypervVm(Resource):
    """The VM, recorded before New-VM: until its VMId is known it is found by name and the
    task's note, or by name and this task's disk when it has no note (a VM of the same name
    that is not ours is never removed)."""

    kind: ClassVar[str] = "hyperv.vm"
    name: str
    host: str
    notes: str
    vm_id: str | None = None
    #: its disk as the host sees it ("" in records older than this field)
    vhd_path: str = ""

    def describe(self) -> str:
        return f"Hyper-V VM {self.name} on {self.host}" + (f" ({self.vm_id})" if self.vm_id else "")


class HypervPublished(Resource):
    """What the watch needs (``Published.resource``): a fact, never removed."""

    kind: ClassVar[str] = "hyperv.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    name: str
    host: str
    vm_id: str
    published_at: float
    #: the disk's LastWriteTimeUtc after New-VM (the host's clock); later, the guest ran
    disk_written: float | None = None

    def describe(self) -> str:
        return f"Hyper-V VM {self.name} ({self.vm_id}) on {self.host}"


class HypervVmRan(Resource):
    """The watch saw the VM Running (a resumed watch then waits for Off only)."""

    kind: ClassVar[str] = "hyperv.vm_ran"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    vm_id: str
