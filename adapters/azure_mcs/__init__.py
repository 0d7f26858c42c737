"""Machine Creation for Azure (``type: azure-mcs``): an Azure Compute Gallery image version,
made from the uploaded managed disk, that MCS machine catalogs use as their master image.
The task is Done once the version's provisioning state is Succeeded (no guest to watch).

Example connector (layerbot.yml)::

    connectors:
      azure-mcs:
        type: azure-mcs
        subscription_id: 00000000-0000-0000-0000-000000000000
        tenant_id: 11111111-1111-1111-1111-111111111111
        resource_group: layering
        location: westeurope
        credential: managed_identity     # the runner's VM identity
        gallery: layering_gallery
        image_definition: win10-vda      # created if missing, with the generation and OS type
        version: "{yyyy}.{mm}{dd}.{hhmm}{ss}"   # major.minor.patch, each a 32-bit integer
        replication_regions: [northeurope]
        hyper_v_generation: V2
        os_type: Windows
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Hashable
from datetime import UTC, datetime
from typing import ClassVar

from adapters.azure import gallery
from adapters.azure.arm import Clients
from adapters.azure.azure_config import INT32_MAX, McsConfig, render_version
from adapters.azure.azure_resources import AzureDefinitionCreated, AzureImageVersion, AzurePublished
from adapters.azure.links import next_steps, portal_link
from adapters.azure.publish import AzureAdapterBase
from adapters.base import (
    AdapterError,
    Capability,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.resources import latest
from adapters.steps import Step

Config = McsConfig
__all__ = ["Adapter", "Clients", "Config"]


#: names a publish tries before giving up, when other runners' tasks keep taking them first
NAME_ATTEMPTS = 5
#: per (endpoint, subscription, group, gallery, definition, event loop): a lock, and the
#: version names tasks of this process took (recorded before their PUT makes them exist)
_CLAIMS: dict[tuple[Hashable, ...], tuple[asyncio.Lock, set[str]]] = {}


@contextlib.asynccontextmanager
async def _names(key: tuple[Hashable, ...]) -> AsyncIterator[set[str]]:
    """The names already taken, while this task alone chooses one for the definition."""
    lock, claimed = _CLAIMS.setdefault((*key, asyncio.get_running_loop()), (asyncio.Lock(), set()))
    async with lock:
        yield claimed


def bump_patch(version: str) -> str:
    """The next version: the patch number plus one (still a 32-bit value)."""
    major, minor, patch = version.split(".")
    if int(patch) + 1 > INT32_MAX:
        raise PlatformError(f"Azure: no free image version after {version}: the patch number "
                            f"would pass Azure's 32-bit limit {INT32_MAX}")
    return f"{major}.{minor}.{int(patch) + 1}"


class Adapter(AzureAdapterBase):
    type_name: ClassVar[str] = "azure-mcs"
    platform: ClassVar[str] = "Machine Creation for Azure"
    capabilities: ClassVar[Capability] = Capability.RESUMABLE_UPLOAD
    config: McsConfig

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [self.upload_step(), PlatformStep("image version", self, self._version)]

    async def _version(self, ctx: PublishContext) -> None:
        cfg, upload = self.config, self.upload_disk(ctx)
        definition_id, created = await gallery.ensure_definition(self.arm)
        if created:
            await ctx.record(AzureDefinitionCreated(id=definition_id))
        for _ in range(NAME_ATTEMPTS):
            mine = await self._claim(ctx, definition_id, upload.id)
            try:
                version_id = await gallery.create_version(self.arm, mine.version, upload.id)
                break
            except AdapterError:
                if not await self._taken_by_another(mine, upload.id):
                    raise
            # another runner's task made a version of this name first (its process knew
            # nothing of this one's claim): Azure keeps its source, this task chooses again
            await ctx.forget(mine)
        else:
            raise PlatformError(f"Azure: other publishes took {NAME_ATTEMPTS} image version names "
                                f"in a row from under this one in {cfg.gallery}/"
                                f"{cfg.image_definition}")
        name = f"{cfg.gallery}/{cfg.image_definition}/{mine.version}"
        mark = AzurePublished(id=version_id, name=name, what="image_version",
                              subscription_id=cfg.subscription_id,
                              resource_group=cfg.resource_group, published_at=time.time())
        ctx.published = Published(link=portal_link(cfg.portal, cfg.tenant_id, version_id),
                                  summary=f"Azure gallery image version {name}", resource=mark)

    async def _claim(self, ctx: PublishContext, definition_id: str,
                     disk_id: str) -> AzureImageVersion:
        """The version name this task records: the one it recorded before (a resumed task),
        unless another runner's task made a version of it meanwhile; else the pattern's, or
        the next patch free at Azure and in this process."""
        cfg = self.config
        mine = latest(ctx.resources, AzureImageVersion)
        if mine is not None and await self._taken_by_another(mine, disk_id):
            await ctx.forget(mine)
            mine = None
        if mine is not None:
            return mine
        key = (cfg.arm_endpoint.lower(), cfg.subscription_id.lower(),
               cfg.resource_group.lower(), cfg.gallery.lower(), cfg.image_definition.lower())
        async with _names(key) as claimed:
            version = render_version(cfg.version, datetime.now(UTC))
            while version in claimed or await gallery.version_exists(self.arm, version):
                version = bump_patch(version)
            claimed.add(version)
            mine = AzureImageVersion(id=f"{definition_id}/versions/{version}",
                                     gallery=cfg.gallery, definition=cfg.image_definition,
                                     version=version)
            await ctx.record(mine)
        return mine

    async def _taken_by_another(self, mine: AzureImageVersion, disk_id: str) -> bool:
        """The version exists, made from another disk than this task's."""
        return await gallery.version_source(self.arm, mine.version) not in (None, disk_id.lower())

    def next_steps(self, published: Published) -> str:
        return next_steps(published.expect(AzurePublished), None)
