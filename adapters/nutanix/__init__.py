"""Nutanix AHV adapter, through Prism Central's v3 REST API (:mod:`.prism_client`, aiohttp).

Why not Nutanix's v4 SDK: its image API (``ntnx-vmm-py-client`` 4.3, ``ImagesApi.create_image``)
makes an image from a URL, a VM disk or an Objects source only; it cannot take a file from
this machine. v3's ``PUT /images/{uuid}/file`` can, so the whole adapter speaks v3.

Publish: look up the cluster, subnet and storage container by name (and ``vm_template``)
-> ``POST /images`` (a DISK_IMAGE, with a UUID recorded before the call) and its task ->
``PUT /images/{uuid}/file`` streaming the qcow2 from disk with progress -> the image is
COMPLETE -> ``POST /vms``: a disk cloned from the image in the container, a NIC on the
subnet, power OFF, and its task -> the link is the VM's page in Prism Central. The image is
then staging (deleted after the publish unless ``keep_image``). A failure or cancel deletes
the VM and the image. The watch waits for the VM to be powered ON and then OFF.

Example connector (layerbot.yml)::

    connectors:
      ahv:
        type: nutanix
        prism_url: https://pc.example.com:9440
        user_env: PRISM_USER            # names the variables holding the credentials
        password_env: PRISM_PASSWORD
        ca_file: certs/prism-ca.pem     # or insecure: true (a lab's self-signed Prism)
        cluster: ahv-cluster-1
        container: default-container
        subnet: vlan100
        vm_template: win10-gold         # optional: copy its vCPUs, memory and boot type
        boot_type: UEFI                 # LEGACY | UEFI | SECURE_BOOT
        keep_image: false
        scripts: [scripts/kmssetup.cmd]
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuids
from typing import ClassVar

from adapters.base import (
    Capability,
    DiskFormat,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    next_report,
)
from adapters.nutanix.nutanix_config import Config
from adapters.nutanix.nutanix_resources import (
    NutanixImage,
    NutanixPoweredOn,
    NutanixPublished,
    NutanixStagingImage,
    NutanixVm,
)
from adapters.nutanix.prism_client import Clients, PrismClient, task_uuid
from adapters.nutanix.prism_errors import PLATFORM
from adapters.nutanix.prism_specs import Placement, image_body, placement, vm_body
from adapters.nutanix.prism_watch import watching
from adapters.resources import Resource, latest
from adapters.steps import Step

__all__ = ["Adapter", "Clients", "Config", "NutanixImage", "NutanixPoweredOn", "NutanixPublished",
           "NutanixStagingImage", "NutanixVm"]

NEXT_STEPS = (
    "The virtual machine {name} is created, but off. Power it on in Prism, log in, and let it "
    "run the scripts specified in the connector configuration; shut it down when it is in the "
    "desired state and the task changes to Done."
)


def vm_page(prism_url: str, uuid: str) -> str:
    """The VM's page in Prism Central's console."""
    return f"{prism_url}/console/#page/explore/s/vms/{uuid}/summary"


class Adapter:
    type_name: ClassVar[str] = "nutanix"
    platform: ClassVar[str] = "Nutanix AHV"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        self.prism = PrismClient(config, self.clients)
        self._placement: Placement | None = None
        self._placement_lock = asyncio.Lock()

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "qcow2"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    async def placement(self) -> Placement:
        async with self._placement_lock:
            if self._placement is None:
                self._placement = await placement(self.prism, self.config)
            return self._placement

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("image", self, self._image), PlatformStep("vm", self, self._vm)]

    async def _image(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "qcow2":
            raise PlatformError(f"{self.platform}: expected a qcow2 disk, got {ctx.artifact_format}")
        where = await self.placement()
        image = NutanixImage(prism_url=self.config.prism_url, uuid=str(uuids.uuid4()),
                             name=ctx.image_name)
        await ctx.record(image)
        doing = f"creating image {image.name}"
        await ctx.progress(0.0, doing)
        answer = await self.prism.call("POST", "/images",
                                       image_body(image.uuid, image.name, ctx.task_id, where),
                                       doing=doing)
        task = task_uuid(answer)
        if task:
            await self.prism.wait_task(task, doing)
        await self.prism.upload(image.uuid, ctx.artifact, f"uploading image {image.name}",
                                ctx.progress)
        await self._wait_complete("image", image.uuid, f"importing image {image.name}")

    async def _wait_complete(self, kind: str, uuid: str, doing: str) -> dict[str, object]:
        """Read an entity until its status is COMPLETE (an ERROR keeps Prism's messages)."""
        from adapters.base import Backoff
        from adapters.nutanix.prism_errors import prism_messages

        backoff = Backoff(*self.clients.task_poll)
        while True:
            entity = await self.prism.call("GET", f"/{kind}s/{uuid}", doing=doing, idempotent=True)
            status = entity.get("status") or {}
            state = status.get("state")
            if state == "COMPLETE":
                return entity
            if state == "ERROR":
                raise PlatformError(f"{PLATFORM}: {doing}: {kind} {uuid} is in state ERROR: "
                                    f"{prism_messages(status) or 'no message'}")
            await backoff.sleep()

    async def _vm(self, ctx: PublishContext) -> None:
        where = await self.placement()
        image = latest(ctx.resources, NutanixImage)
        if image is None:
            raise PlatformError(f"{self.platform}: no image was recorded for the VM's disk")
        vm = NutanixVm(prism_url=self.config.prism_url, uuid=str(uuids.uuid4()), name=ctx.image_name)
        await ctx.record(vm)
        doing = f"creating VM {vm.name}"
        await ctx.progress(0.0, doing)
        answer = await self.prism.call("POST", "/vms",
                                       vm_body(vm.uuid, vm.name, ctx.task_id, image.uuid, where),
                                       doing=doing)
        task = task_uuid(answer)
        if task:
            await self.prism.wait_task(task, doing, ctx.progress)
        made = await self._wait_complete("vm", vm.uuid, doing)
        power = ((made.get("status") or {}).get("resources") or {}).get("power_state")  # type: ignore[union-attr]
        if power != "OFF":
            raise PlatformError(f"{PLATFORM}: VM {vm.name} was created {power}, not OFF")
        # the disk is a clone now: the image only fed it
        if self.config.keep_image:
            await ctx.forget(image)
        elif not isinstance(image, NutanixStagingImage):
            await ctx.replace(image, NutanixStagingImage(**image.model_dump()))
        await ctx.progress(1.0, f"VM {vm.name} is created, powered off")
        ctx.published = Published(
            link=vm_page(self.config.prism_url, vm.uuid), summary=f"Nutanix VM {vm.name} (powered off)",
            resource=NutanixPublished(prism_url=vm.prism_url, uuid=vm.uuid, name=vm.name,
                                      published_at=time.time()))

    def next_steps(self, published: Published) -> str:
        return NEXT_STEPS.format(name=published.expect(NutanixPublished).name)

    # ------------------------------------------------------------ watch
    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        vm = published.expect(NutanixPublished)
        timeout = self.config.watch_timeout or ctx.watch_timeout
        deadline = vm.published_at + timeout
        powered_on = any(isinstance(r, NutanixPoweredOn) and r.uuid == vm.uuid for r in ctx.resources)
        await ctx.progress(0.5 if powered_on else 0.0,
                           f"waiting for VM {vm.name} to be powered on, run its scripts and shut down")
        async with watching(self.config, self.clients, vm.uuid, vm.name) as reports:
            while True:
                report = await next_report(
                    reports, deadline,
                    f"{self.platform}: waited {timeout:g} s for VM {vm.name} to be powered on "
                    "and shut down (watch_timeout)")
                state = report.get(vm.uuid)
                if state is None:
                    raise PlatformError(f"{PLATFORM}: VM {vm.name} ({vm.uuid}) is gone")
                if state == "ON" and not powered_on:
                    powered_on = True
                    await ctx.record(NutanixPoweredOn(uuid=vm.uuid))
                    await ctx.progress(0.5, f"VM {vm.name} is on; waiting for it to shut down")
                elif state == "OFF" and powered_on:
                    await ctx.progress(1.0, f"VM {vm.name} has shut down")
                    return

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, NutanixVm | NutanixImage):
            kind = "vm" if isinstance(resource, NutanixVm) else "image"
            gone = await self.prism.delete(kind, resource.uuid, f"deleting {resource.describe()}")
            return [resource.describe()] if gone else []
        raise PlatformError(f"{self.platform}: cannot remove {resource.describe()}")

    async def close(self) -> None:
        await self.prism.close()
