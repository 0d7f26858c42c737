"""What both Azure adapters share: the upload disk step and removing what a publish made."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import ClassVar

from adapters.azure import gallery, image
from adapters.azure import managed_disk as disk
from adapters.azure.arm import Arm, Clients
from adapters.azure.artifact import identity
from adapters.azure.azure_config import AzureConfig
from adapters.azure.azure_resources import (
    AzureImage,
    AzureImageVersion,
    AzureKeptDisk,
    AzureUploadDisk,
    AzureUploadFinished,
)
from adapters.azure.managed_disk import MIB
from adapters.azure_blob import pages
from adapters.azure_blob.nonzero import total
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
        #: what each upload of this adapter sent
        self.uploads: list[pages.UploadStats] = []

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "vhd"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    def upload_step(self) -> PlatformStep:
        return PlatformStep("upload", self, self._upload)  # type: ignore[arg-type]

    async def _upload(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "vhd":
            raise PlatformError(f"Azure: expected a fixed VHD, got {ctx.artifact_format}")
        size = disk.upload_size(ctx.artifact)
        made = await asyncio.to_thread(identity, ctx.artifact)
        recorded = latest(ctx.resources, AzureUploadDisk)
        state: str | None = None
        if recorded is not None:
            state = await disk.state(self.arm, recorded.name)
            same = recorded.artifact == made and recorded.upload_size == size
            finished = _finished(ctx, recorded)
            if same and finished is not None and state is not None:
                if state in disk.OPEN_STATES:  # stopped between the last page and the revoke
                    await disk.revoke(self.arm, recorded.name)
                await ctx.progress(1.0, f"resuming: the upload into {recorded.name} had finished")
                return
            if finished is not None and (not same or state is None):  # the pages must go again
                await ctx.forget(finished)
            if not same or (state is not None and state not in disk.UPLOADABLE_STATES):
                log.info("%s: %s holds another VHD or cannot take more pages (%s): starting "
                         "over", ctx.task_id, recorded.name, state)
                if state is not None:
                    await disk.delete(self.arm, recorded.name)
                await ctx.forget(recorded)
                recorded, state = None, None
        if recorded is None:
            name = disk.azure_name(ctx.image_name, "-upload")
            kind = AzureKeptDisk if self.config.keep_disk else AzureUploadDisk
            recorded = kind(id=disk.resource_id(self.config, "disks", name), name=name,
                            upload_size=size, artifact=made)
            # recorded before it exists: a crash while ARM creates it still leaves its name
            await ctx.record(recorded)
        name = recorded.name
        resuming = state is not None
        if not resuming:
            await disk.create(self.arm, name, size)
        sas = await disk.grant_write(self.arm, name)
        present = None
        if resuming:
            log.info("%s: resuming the upload into %s", ctx.task_id, name)
            present = await pages.present_ranges(sas, self.clients.blob)
            held = total(present)
            await ctx.progress(max(held / size, 1e-6),
                               f"resuming the upload: the disk holds {held / MIB:.0f} MiB already")
        stats = await pages.upload_pages(sas, ctx.artifact, progress=ctx.progress,
                                         present=present, options=self.clients.blob)
        log.info("%s: %s: sent %d bytes in %d requests (data %d, already there %d)", ctx.task_id,
                 name, stats.sent_bytes, stats.requests, stats.data_bytes, stats.present_bytes)
        self.uploads.append(stats)
        await ctx.record(AzureUploadFinished(disk_id=recorded.id, artifact=recorded.artifact))
        await disk.revoke(self.arm, name)

    async def uploaded_bytes(self, upload: Resource, artifact: Path) -> int:
        """The bytes of ``artifact`` the recorded upload disk holds (0: another VHD, or none).
        A disk being uploaded (``ActiveUpload``: the runner before left its access open) is
        asked for its write SAS again, which leaves its state as it is; it is not revoked,
        since that would end its upload. A closed disk (``Unattached``) is read through a
        read SAS, revoked after."""
        assert isinstance(upload, AzureUploadDisk), upload
        if upload.artifact != await asyncio.to_thread(identity, artifact):
            return 0
        state = await disk.state(self.arm, upload.name)
        if state == "ActiveUpload":
            sas = await disk.grant_write(self.arm, upload.name)
            return await pages.uploaded_bytes(sas, artifact, self.clients.blob)
        if state != "Unattached":
            return 0
        sas = await disk.grant_read(self.arm, upload.name)
        try:
            return await pages.uploaded_bytes(sas, artifact, self.clients.blob)
        finally:
            await disk.revoke(self.arm, upload.name)

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


def _finished(ctx: PublishContext, upload: AzureUploadDisk) -> AzureUploadFinished | None:
    """The record that every page of ``upload``'s VHD was sent, if any."""
    for resource in reversed(ctx.resources):
        if isinstance(resource, AzureUploadFinished) and resource.disk_id == upload.id:
            return resource
    return None
