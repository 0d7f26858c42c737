"""What a nutanix publish records (adapters.resources): the image, the VM, what the watch
needs once published, and the fact that the watch saw the VM powered on."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource


class NutanixImage(Resource):
    """The DISK_IMAGE, recorded (with the UUID layerbot gives it) before it is created."""

    kind: ClassVar[str] = "nutanix.image"
    prism_url: str
    uuid: str
    name: str

    def describe(self) -> str:
        return f"Nutanix image {self.name} ({self.uuid})"


class NutanixStagingImage(NutanixImage):
    """The image once the VM's disk is cloned from it: deleted after success too."""

    kind: ClassVar[str] = "nutanix.staging_image"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING


class NutanixVm(Resource):
    """The VM, recorded (with its UUID) before it is created; kept once the publish succeeded."""

    kind: ClassVar[str] = "nutanix.vm"
    prism_url: str
    uuid: str
    name: str

    def describe(self) -> str:
        return f"Nutanix VM {self.name} ({self.uuid})"


class NutanixPublished(Resource):
    """What a publish left (``Published.resource``): the powered-off VM."""

    kind: ClassVar[str] = "nutanix.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    prism_url: str
    uuid: str
    name: str
    published_at: float

    def describe(self) -> str:
        return f"Nutanix VM {self.name} ({self.uuid})"


class NutanixPoweredOn(Resource):
    """The watch saw the VM powered on (a runner that resumes the watch waits for OFF only)."""

    kind: ClassVar[str] = "nutanix.powered_on"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    uuid: str
