"""What a XenServer publish records (see adapters/resources.py for the lifetimes)."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource

#: other_config key naming the layerbot task that made a VDI or VM
TASK_TAG = "layerbot-task"


class XenVdi(Resource):
    """The disk created for the upload (kept, attached to the VM, once the publish succeeded).

    Recorded before ``VDI.create`` without a UUID (pending): cleanup then finds the disk by
    its name and its ``other_config`` tag, so a cancel or crash during the call loses nothing.
    """

    kind: ClassVar[str] = "xenserver.vdi"
    uuid: str | None = None
    name: str
    task_id: str | None = None

    def describe(self) -> str:
        return f"XenServer disk {self.name} ({self.uuid or 'being created'})"


class XenVm(Resource):
    """The VM cloned from vm_template; removing it destroys its VBDs and their disks.

    Recorded before ``VM.clone`` without a UUID (pending): cleanup then finds the clone by its
    name, and by its tag or (not tagged yet) the tag it inherited from ``template_uuid``.
    """

    kind: ClassVar[str] = "xenserver.vm"
    uuid: str | None = None
    name: str
    task_id: str | None = None
    template_uuid: str | None = None

    def describe(self) -> str:
        return f"XenServer VM {self.name} ({self.uuid or 'being cloned'})"


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
