"""What both Azure adapters share: the upload disk step and removing what a publish made."""

from __future__ import annotations

import logging
from typing import ClassVar

from adapters.azure import disk, gallery, image
from adapters.azure.arm import Arm, Clients
from adapters.azure.config import AzureConfig
from adapters.azure.errors import AzureNotFoundError
from adapters.azure.resources import AzureImage, AzureImageVersion, AzureKeptDisk, AzureUploadDisk
from adapters.base import (
    Capability,
    DiskFormat,
    PlatformError,
    PlatformStep,
    PublishContext,
)
from adapters.resources import Resource, latest

log = logging.getLogger(__name__)


class AzureAdapterBase:
    """Uploads the fixed VHD into a managed disk; subclasses make the image from it."""

    type_name: ClassVar[str]
    platform: ClassVar[str]
    capabilities: ClassVar[Capability]

    def __init__(self, config: AzureConfig, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        self.arm = Arm(config, self.clients)

    def disk_format(self) -> DiskFormat:
        return "vhd"

    def upload_step(self) -> PlatformStep:
        return PlatformStep("upload", self, self._upload)  # type: ignore[arg-type]

    async def _upload(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "vhd":
            raise PlatformError(f"Azure: expected a fixed VHD, got {ctx.artifact_format}")
        size = disk.upload_size(ctx.artifact)
        recorded = latest(ctx.resources, AzureUploadDisk)
        resuming = recorded is not None and recorded.upload_size == size
        if resuming:
            assert recorded is not None
            name = recorded.name
            log.info("%s: resuming the upload into %s", ctx.task_id, name)
        else:
            name = disk.azure_name(ctx.image_name, "-upload")
            kind = AzureKeptDisk if self.config.keep_disk else AzureUploadDisk
            # recorded before it exists: a crash while ARM creates it still leaves its name
            await ctx.record(kind(id=disk.resource_id(self.config, "disks", name), name=name,
                                  upload_size=size))
            await disk.create(self.arm, name, size)
        try:
            sas = await disk.grant_write(self.arm, name)
        except AzureNotFoundError:
            if not resuming:
                raise
            # the runner before stopped between recording the disk and ARM creating it
            resuming = False
            await disk.create(self.arm, name, size)
            sas = await disk.grant_write(self.arm, name)
        await self.clients.uploader()(sas, ctx.artifact, ctx.progress, resuming)
        await disk.revoke(self.arm, name)

    @staticmethod
    def upload_disk(ctx: PublishContext) -> AzureUploadDisk:
        found = latest(ctx.resources, AzureUploadDisk)
        if found is None:
            raise PlatformError("Azure: no upload disk was recorded before making the image")
        return found

    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, AzureUploadDisk):
            gone = await disk.delete(self.arm, resource.name)
        elif isinstance(resource, AzureImage):
            gone = await image.delete(self.arm, resource.name)
        elif isinstance(resource, AzureImageVersion):
            gone = await gallery.delete_version(self.arm, resource.gallery, resource.definition,
                                                resource.version)
        else:
            raise PlatformError(f"Azure: cannot remove {resource.describe()}")
        return [resource.describe()] if gone else []

    async def close(self) -> None:
        await self.arm.close()
