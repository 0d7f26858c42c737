"""What an Azure publish records (see :mod:`adapters.resources`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from adapters.resources import Lifetime, Resource


class AzureUploadDisk(Resource):
    """The managed disk the VHD is uploaded into; it only feeds the image or image version.
    Removing it revokes its SAS access first, then deletes it."""

    kind: ClassVar[str] = "azure.upload_disk"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING
    id: str
    name: str
    upload_size: int
    #: which VHD it holds (:func:`adapters.azure.artifact.identity`); "" in rows written
    #: before it was recorded: such an upload is started over
    artifact: str = ""

    def describe(self) -> str:
        return f"Azure managed disk {self.name}"


class AzureKeptDisk(AzureUploadDisk):
    """The upload disk of a connector with ``keep_disk: true``: removed only on failure."""

    kind: ClassVar[str] = "azure.kept_disk"
    lifetime: ClassVar[Lifetime] = Lifetime.PARTIAL


class AzureUploadFinished(Resource):
    """Every page of the VHD ``artifact`` is in the upload disk ``disk_id`` (recorded before
    its access is revoked): a runner taking the task over skips the upload."""

    kind: ClassVar[str] = "azure.upload_finished"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    disk_id: str
    artifact: str


class AzureImage(Resource):
    """A managed image (``type: azure``)."""

    kind: ClassVar[str] = "azure.image"
    id: str
    name: str

    def describe(self) -> str:
        return f"Azure image {self.name}"


class AzureImageVersion(Resource):
    """An Azure Compute Gallery image version (``type: azure-mcs``)."""

    kind: ClassVar[str] = "azure.image_version"
    id: str
    gallery: str
    definition: str
    version: str

    def describe(self) -> str:
        return f"Azure gallery image version {self.gallery}/{self.definition}/{self.version}"


class AzureDefinitionCreated(Resource):
    """This task created the gallery image definition (kept: other versions will use it)."""

    kind: ClassVar[str] = "azure.definition_created"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    id: str


class AzurePublished(Resource):
    """What a publish left (``Published.resource``): the image or image version."""

    kind: ClassVar[str] = "azure.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    id: str
    name: str
    what: Literal["image", "image_version"]
    subscription_id: str
    resource_group: str
    published_at: float

    def describe(self) -> str:
        label = "image" if self.what == "image" else "gallery image version"
        return f"Azure {label} {self.name}"


class AzurePoweredOn(Resource):
    """The watch saw this VM running (a restarted watch then waits for it to stop)."""

    kind: ClassVar[str] = "azure.powered_on"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    vm_id: str
