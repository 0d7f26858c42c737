"""Google Cloud (Compute Engine) adapter: the gce-tar tarball goes to Cloud Storage with a
resumable upload (:mod:`adapters.gcp.storage`), ``images.insert`` makes an image from it
(``rawDisk.source``, no import translation), and the watch waits until a VM booted from the
image has run and stopped.

Publish: upload to ``gs://BUCKET/layerbot/<template>/<task>.tar.gz`` (STAGING: deleted once
the image is READY, unless ``keep_object``) -> ``images.insert`` with the family, guest OS
features, licenses, storage location, architecture and labels (``layerbot-template``,
``layerbot-task`` and the connector's) -> wait on the global operation -> the image is
READY. The image name is the task's, made a valid Compute Engine name
(:func:`adapters.gcp.names.image_name`). A failure or cancel deletes the object and the
image (only one carrying this task's label). google-cloud-compute (about 3 s to import) is
imported only inside functions: a catalog with a gcp connector loads without it.

Example connector (layerbot.yml)::

    connectors:
      gce:
        type: gcp
        project: my-project-123
        zone: europe-west1-b              # where the watch looks for the VM
        bucket: my-layerbot-staging       # the tarball goes to layerbot/<template>/<task>.tar.gz
        credentials_file_env: GCP_KEY_FILE   # names the variable holding a key file's path;
                                             # unset: application default credentials
        image_family: win10-layered       # optional
        storage_locations: [europe-west1] # optional: one region or multi-region
        guest_os_features: [UEFI_COMPATIBLE, GVNIC, MULTI_IP_SUBNET]
        licenses: []                      # optional: projects/P/global/licenses/NAME
        architecture: X86_64              # X86_64 | ARM64
        labels: {team: euc}
        keep_object: false
        scripts: [scripts/activate-office.cmd]
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from adapters.base import (
    Capability,
    DiskFormat,
    NotFoundError,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    next_report,
)
from adapters.gcp import console, images, names
from adapters.gcp.compute_faults import AlreadyExistsError
from adapters.gcp.compute_session import Clients, ComputeSession, session_key
from adapters.gcp.gcp_config import Config
from adapters.gcp.gcp_resources import GcpImage, GcpInstanceRan, GcpPublished
from adapters.gcp.instance_watch import RAN, STOPPED, watching

# GcsUpload's kind must be known before a runner taking a task over loads its resources
# (storage.py imports no Google library at module level)
from adapters.gcp.storage import GcsUpload
from adapters.resources import Lifetime, Resource
from adapters.steps import Step

if TYPE_CHECKING:
    from adapters.gcp.storage import Storage

__all__ = ["Adapter", "Clients", "Config", "GcpImage", "GcpInstanceRan", "GcpPublished", "GcsUpload"]


def object_name(ctx: PublishContext) -> str:
    """gs://BUCKET/layerbot/<template>/<task>.tar.gz"""
    from adapters.gcp.storage import object_name as in_bucket

    return in_bucket(ctx.template, ctx.task_id)


def image_labels(config: Config, ctx: PublishContext) -> dict[str, str]:
    return {**config.labels, "layerbot-template": names.label_value(ctx.template),
            "layerbot-task": names.label_value(ctx.task_id)}


class Adapter:
    type_name: ClassVar[str] = "gcp"
    platform: ClassVar[str] = "Google Cloud"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.RESUMABLE_UPLOAD

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        self._key = session_key(config, self.clients)
        self.session = self.clients.sessions.acquire(self._key, lambda: ComputeSession(
            config.compute_endpoint, config, self.clients.credentials_for))
        self._storage: Storage | None = None
        self._closed = False

    async def storage(self) -> Storage:
        """Cloud Storage with the same credentials (made on first use: application default
        credentials may ask the metadata server)."""
        if self._storage is None:
            from adapters.gcp.storage import Storage, StorageAccess

            cfg = self.config
            credentials = await asyncio.to_thread(self.clients.credentials_for, cfg)
            self._storage = Storage(StorageAccess(
                project=cfg.project, credentials=credentials, endpoint=cfg.storage_endpoint,
                **self.clients.storage_options))
        return self._storage

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "gce-tar"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("upload", self, self._upload),
                PlatformStep("image", self, self._create_image)]

    async def _upload(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "gce-tar":
            raise PlatformError(f"{self.platform}: expected a gce-tar tarball, got {ctx.artifact_format}")
        # a runner that took the task over continues the recorded session (and says so)
        await (await self.storage()).upload(ctx, self.config.bucket, object_name(ctx))

    async def uploaded_bytes(self, upload: Resource, artifact: Path) -> int:
        from adapters.gcp.storage import GcsUpload

        if not isinstance(upload, GcsUpload):
            return 0
        return await (await self.storage()).uploaded_bytes(upload, artifact)

    async def _create_image(self, ctx: PublishContext) -> None:
        cfg, session, poll = self.config, self.session, self.clients.operation_poll
        name = names.image_name(ctx.image_name, ctx.task_id)
        image = await self._image_record(ctx, name)
        doing = f"creating image {name}"
        await ctx.progress(0.0, doing)
        try:
            operation = await images.insert(session, cfg, name,
                                            images.source_url(cfg.bucket, object_name(ctx)),
                                            image_labels(cfg, ctx), image.request_id)
        except AlreadyExistsError:
            if not await images.take_over(session, cfg.project, name, ctx.task_id, poll,
                                          self.clients.pending_image_bound):
                raise
        else:
            await images.wait(session, cfg.project, operation, doing, poll, ctx.progress)
            found, _ = await images.status(session, cfg.project, name)
            images.check_ready(name, found)
        if cfg.keep_object:  # the tarball stays: cleanup must not delete it
            for staging in [r for r in ctx.resources if r.lifetime is Lifetime.STAGING]:
                await ctx.forget(staging)
        await ctx.progress(1.0, f"image {name} is READY")
        ctx.published = Published(
            link=console.image_page(cfg.project, name), summary=f"Google Cloud image {name}",
            resource=GcpPublished(project=cfg.project, zone=cfg.zone, name=name,
                                  published_at=time.time()))

    async def _image_record(self, ctx: PublishContext, name: str) -> GcpImage:
        """The image's record, with its request ID: the recorded one while it survives (a retry
        or a takeover repeats the same insert), else a new one recorded before the insert."""
        for recorded in reversed(ctx.resources):
            if isinstance(recorded, GcpImage) and recorded.name == name:
                if recorded.request_id:
                    return recorded
                fresh = recorded.model_copy(update={"request_id": images.new_request_id()})
                await ctx.replace(recorded, fresh)
                return fresh
        image = GcpImage(project=self.config.project, name=name, task=ctx.task_id,
                         request_id=images.new_request_id())
        await ctx.record(image)
        return image

    def next_steps(self, published: Published) -> str:
        image = published.expect(GcpPublished)
        return console.next_steps(image.project, image.zone, image.name)

    # ------------------------------------------------------------ watch
    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        image = published.expect(GcpPublished)
        timeout = self.config.watch_timeout or ctx.watch_timeout
        deadline = image.published_at + timeout
        ran = {r.instance for r in ctx.resources if isinstance(r, GcpInstanceRan)}
        await ctx.progress(0.0, f"waiting for a VM booted from image {image.name} in "
                                f"{image.zone} to run and shut down")
        async with watching(self.session, image.project, image.zone, image.name,
                            self.clients.watch_poll) as reports:
            while True:
                report = await next_report(
                    reports, deadline,
                    f"{self.platform}: waited {timeout:g} s for a VM booted from image "
                    f"{image.name} to run and shut down (watch_timeout)")
                if gone := sorted(ran - {instance.name for instance in report}):
                    # seen RUNNING (by this runner or the one before), now deleted: it
                    # stopped first (see instance_watch)
                    await ctx.progress(1.0, f"VM {gone[0]} has shut down and was deleted")
                    return
                for instance in report:
                    if instance.status in RAN and instance.name not in ran:
                        ran.add(instance.name)
                        await ctx.record(GcpInstanceRan(instance=instance.name))
                        await ctx.progress(0.5, f"VM {instance.name} is running; waiting for it "
                                                "to shut down")
                    if instance.status in STOPPED and (instance.name in ran
                                                       or instance.ran_and_stopped):
                        await ctx.progress(1.0, f"VM {instance.name} has shut down")
                        return

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, GcpImage):
            return await images.delete(self.session, resource.project, resource.name,
                                       resource.task, self.clients.operation_poll,
                                       self.clients.pending_image_bound)
        from adapters.gcp.storage import GcsUpload

        if isinstance(resource, GcsUpload):
            # the contract's line per removed object is its description
            removed = await (await self.storage()).remove(resource)
            return [resource.describe()] if removed else []
        raise PlatformError(f"{self.platform}: cannot remove {resource.describe()}")

    async def unpublish(self, published: Published, task_id: str) -> list[str]:
        """Delete a published image (tests; a user's "unpublish")."""
        image = published.expect(GcpPublished)
        try:
            return await images.delete(self.session, image.project, image.name, task_id,
                                       self.clients.operation_poll,
                                       self.clients.pending_image_bound)
        except NotFoundError:
            return []

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.clients.sessions.release(self._key, self.session)
            if self._storage is not None:
                await self._storage.close()
