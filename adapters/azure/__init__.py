"""Azure adapter (``type: azure``): a managed image from an uploaded managed disk, then a
watch until a VM made from it has run and shut down. ``type: azure-mcs`` (Machine Creation
for Azure, an Azure Compute Gallery image version) is :mod:`adapters.azure_mcs`.

Publish (no storage account needed): the compositor's fixed VHD (a whole number of MiB plus
the 512-byte footer) goes into an empty managed disk made with ``createOption: Upload``
through a write SAS (``beginGetAccess``; :mod:`adapters.azure_blob.pages` sends only the
non-zero ranges and resumes from the page ranges the blob has), access is revoked, and
``images.begin_create_or_update`` makes the image. The disk is staging: deleted once the
image exists, unless ``keep_disk: true``. Credentials: docs/azure.md.

Example connector (layerbot.yml)::

    connectors:
      azure-layering:
        type: azure
        subscription_id: 00000000-0000-0000-0000-000000000000
        tenant_id: 11111111-1111-1111-1111-111111111111
        resource_group: layering
        location: westeurope
        credential: client_secret        # client_secret | managed_identity | default
        client_id: 22222222-2222-2222-2222-222222222222
        client_secret_env: AZURE_CLIENT_SECRET   # the variable's name, not the secret
        hyper_v_generation: V2           # V1 | V2
        os_type: Windows                 # Windows | Linux
        os_state: Generalized            # Generalized | Specialized
        disk_sku: Standard_LRS
        vm_size: Standard_D2s_v5         # suggested in the next step
        tags: {owner: layering}
        scripts: [scripts/activate-office.cmd]
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from adapters.azure import image
from adapters.azure import managed_disk as disk
from adapters.azure.arm import Clients
from adapters.azure.azure_config import Config
from adapters.azure.azure_resources import AzureImage, AzurePoweredOn, AzurePublished
from adapters.azure.links import next_steps, portal_link
from adapters.azure.publish import AzureAdapterBase
from adapters.azure.vm_watch import WATCHES
from adapters.base import (
    Capability,
    GuestTimeoutError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.resources import latest
from adapters.steps import Step

__all__ = ["Adapter", "Clients", "Config"]

#: instance-view power states after which a VM that ran has shut down
STOPPED = frozenset({"stopped", "deallocated"})
#: seconds of clock difference allowed between this runner and Azure's ``timeCreated``
CLOCK_SKEW = 300.0


class Adapter(AzureAdapterBase):
    type_name: ClassVar[str] = "azure"
    platform: ClassVar[str] = "Microsoft Azure"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.RESUMABLE_UPLOAD
    config: Config

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [self.upload_step(), PlatformStep("image", self, self._image)]

    async def _image(self, ctx: PublishContext) -> None:
        cfg, upload = self.config, self.upload_disk(ctx)
        name = disk.azure_name(ctx.image_name)
        recorded = AzureImage(id=disk.resource_id(cfg, "images", name), name=name)
        if latest(ctx.resources, AzureImage) != recorded:
            await ctx.record(recorded)
        image_id = await image.create(self.arm, name, upload.id)
        mark = AzurePublished(id=image_id, name=name, what="image",
                              subscription_id=cfg.subscription_id,
                              resource_group=cfg.resource_group, published_at=time.time())
        ctx.published = Published(link=portal_link(cfg.portal, cfg.tenant_id, image_id),
                                  summary=f"Azure image {name} in {cfg.resource_group}",
                                  resource=mark)

    def next_steps(self, published: Published) -> str:
        return next_steps(published.expect(AzurePublished), self.config.vm_size)

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        res = published.expect(AzurePublished)
        deadline = res.published_at + (self.config.watch_timeout or ctx.watch_timeout)
        seen = {r.vm_id.lower() for r in ctx.resources if isinstance(r, AzurePoweredOn)}
        await ctx.progress(0.0, f"waiting for a VM made from image {res.name} to run and shut down")
        async with WATCHES.watch(self.config, self.clients, res.id) as waiter:
            while True:
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise GuestTimeoutError(
                        f"Azure: no VM made from image {res.name} ran and shut down within "
                        f"{deadline - res.published_at:.0f} s of the publish")
                try:
                    async with asyncio.timeout(remaining):
                        vms = await waiter.next()
                except TimeoutError:
                    continue
                for vm in vms:
                    if vm.power == "running" and vm.id.lower() not in seen:
                        seen.add(vm.id.lower())
                        await ctx.record(AzurePoweredOn(vm_id=vm.id))
                        await ctx.progress(0.5, f"VM {vm.name} is running; waiting for it to "
                                                "shut down")
                    # Azure starts a VM it creates: one made from this new image that is
                    # stopped has run, even if no listing saw it running
                    elif vm.power in STOPPED and (
                            vm.id.lower() in seen or (vm.created is not None and
                                                      vm.created >= res.published_at - CLOCK_SKEW)):
                        await ctx.progress(1.0, f"VM {vm.name} has shut down ({vm.power})")
                        return
