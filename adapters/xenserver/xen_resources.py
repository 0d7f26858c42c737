"""What a XenServer publish records (see adapters/resources.py for the lifetimes)."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource


class XenVdi(Resource):
    """The disk created for the upload (kept, attached to the VM, once the publish succeeded)."""

    kind: ClassVar[str] = "xenserver.vdi"
    uuid: str
    name: str

    def describe(self) -> str:
        return f"XenServer disk {self.name} ({self.uuid})"


class XenVm(Resource):
    """The VM cloned from vm_template; removing it destroys its VBDs and their disks."""

    kind: ClassVar[str] = "xenserver.vm"
    uuid: str
    name: str

    def describe(self) -> str:
        return f"XenServer VM {self.name} ({self.uuid})"


class XenPublished(Resource):
    """What the watch needs (``Published.resource``): a fact, never removed."""

    kind: ClassVar[str] = "xenserver.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    uuid: str
    ref: str
    name: str
    published_at: float

    def describe(self) -> str:
        return f"XenServer VM {self.name} ({self.uuid})"


class XenVmRan(Resource):
    """The watch saw the VM Running (a resumed watch then waits for Halted only)."""

    kind: ClassVar[str] = "xenserver.vm_ran"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    uuid: str
