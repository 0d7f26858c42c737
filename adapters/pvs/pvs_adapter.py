"""The Provisioning adapter: copy the vhdx to the store, import it, set its properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters.base import (
    Capability,
    DiskFormat,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.pvs.pvs_config import LICENSE_MODES, Config
from adapters.pvs.pvs_names import file_unc, properties_unc, vdisk_name
from adapters.pvs.pvs_resources import PvsConvertedDisk, PvsDiskLocator, PvsFile, PvsPublished
from adapters.pvs.pvs_scripts import import_disk, remove_locator, set_disk
from adapters.resources import Resource
from adapters.steps import Step
from adapters.windows_remote.powershell import Endpoint, RemoteClients, Script, acquire
from adapters.windows_remote.smb_copy import SmbCopier, SmbShare

PLATFORM = "Citrix Provisioning"
NEXT_STEPS = ("The vDisk {name} is registered in store {store}, site {site} on {server}: "
              "assign the vDisk to your target devices.")


@dataclass
class Clients:
    """How the adapter reaches the Provisioning server; tests inject the PowerShell runner
    (``remote.connect``), short timings and the hypervisor connector's own clients."""

    remote: RemoteClients = field(default_factory=RemoteClients)
    #: the hypervisor adapter module's ``Clients`` (None: its defaults)
    hypervisor: object | None = None


class Adapter:
    """A vDisk only (Done at registration). ``Adapter(config)`` with a ``hypervisor`` is an
    :class:`~adapters.pvs.pvs_hypervisor.WithHypervisor`, whose capabilities are that
    adapter's watch: capabilities are per connector, so the class is chosen per connector."""

    type_name: ClassVar[str] = "pvs"
    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[Capability] = Capability.NONE

    def __new__(cls, config: Config, clients: Clients | None = None) -> Adapter:
        if cls is Adapter and config.hypervisor is not None:
            from adapters.pvs.pvs_hypervisor import WithHypervisor

            return super().__new__(WithHypervisor)
        return super().__new__(cls)

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        self._closed = False
        self._open_transport()

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "vhdx"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("copy to the store", self, self._copy),
                PlatformStep("import the vDisk", self, self._register)]

    async def _copy(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "vhdx":
            raise PlatformError(f"{PLATFORM}: expected a VHDX, got {ctx.artifact_format}")
        name = vdisk_name(ctx.image_name)
        target = file_unc(self.config.store_share, name)
        await ctx.progress(0.0, f"copying {name}.vhdx to {self.config.store_share}")
        await ctx.record(PvsFile(path=target))
        await self._copy_file(ctx, target)

    async def _register(self, ctx: PublishContext) -> None:
        cfg = self.config
        name = vdisk_name(ctx.image_name)
        await ctx.record(PvsDiskLocator(name=name, store=cfg.store, site=cfg.site))
        await ctx.progress(0.0, f"importing vDisk {name} into store {cfg.store}, site {cfg.site}")
        description = f"layerbot: template {ctx.template}, task {ctx.task_id}"
        await self._run(import_disk(name, cfg.store, cfg.site, description))
        wanted = {"WriteCacheType": cfg.write_cache_type, "LicenseMode": LICENSE_MODES[cfg.license_mode]}
        got = await self._run(set_disk(name, cfg.store, cfg.site, wanted["WriteCacheType"],
                                       wanted["LicenseMode"], cfg.write_cache_size_mb))
        wrong = {k: got.get(k) for k, v in wanted.items() if not isinstance(got, dict) or got.get(k) != v}
        if wrong:
            raise PlatformError(f"{PLATFORM}: vDisk {name} kept {wrong} after Set-PvsDisk "
                                f"(asked for {wanted})")
        await ctx.progress(1.0, f"vDisk {name} is registered")
        ctx.published = Published(
            link=self._link(name),
            summary=f"vDisk {name} in store {cfg.store}, site {cfg.site} on {cfg.server} "
                    f"({cfg.access_mode} image, write cache {cfg.write_cache})",
            resource=PvsPublished(name=name, store=cfg.store, site=cfg.site, server=cfg.server))

    def _link(self, name: str) -> str:
        return file_unc(self.config.store_share, name)

    def next_steps(self, published: Published) -> str:
        disk = published.expect(PvsPublished)
        return NEXT_STEPS.format(name=disk.name, store=disk.store, site=disk.site, server=disk.server)

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, PvsDiskLocator):
            answer = await self._run(remove_locator(resource.name, resource.store, resource.site))
            return [resource.describe()] if answer.get("Removed") else []
        if isinstance(resource, PvsFile):
            removed = await self._delete_file(resource.path)
            await self._delete_file(properties_unc(resource.path))
            return [resource.describe()] if removed else []
        if isinstance(resource, PvsConvertedDisk):
            try:
                resource.path.unlink()
            except FileNotFoundError:
                return []
            return [resource.describe()]
        raise PlatformError(f"{PLATFORM}: cannot remove {resource.describe()}")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close_transport()

    # ------------------------------------------------------------ transport
    def _open_transport(self) -> None:
        cfg = self.config
        validation: bool | str = (False if cfg.insecure else
                                  str(cfg.ca_file) if cfg.ca_file is not None else True)
        endpoint = Endpoint(cfg.server, cfg.user_env, cfg.password_env, cfg.auth, cfg.https,
                            cfg.winrm_port, validation)
        self._key, self.session = acquire(endpoint, self.clients.remote)
        share = SmbShare(cfg.share_server, cfg.user_env, cfg.password_env, cfg.smb_port,
                         "negotiate" if cfg.auth == "credssp" else cfg.auth, cfg.smb_encrypt,
                         self.clients.remote.timeout)
        self.copier = SmbCopier(share, self.clients.remote.chunk_size, self.clients.remote.smb_retry)

    async def _close_transport(self) -> None:
        try:
            await self.copier.close()
        finally:
            await self.clients.remote.pool.release(self._key, self.session)

    async def _run(self, script: Script) -> dict[str, Any]:
        answer = await self.session.run(script, idempotent=True)
        if len(answer) != 1 or not isinstance(answer[0], dict):
            raise PlatformError(f"{PLATFORM}: {script.doing}: expected one object, got {answer!r:.200}")
        return answer[0]

    async def _copy_file(self, ctx: PublishContext, target: str) -> None:
        name = target.rsplit("\\", 1)[-1]

        async def progress(done: int, total: int) -> None:
            await ctx.progress(done / total if total else 1.0, f"copying {name}")

        await self.copier.copy(ctx.artifact, target, progress)

    async def _delete_file(self, target: str) -> bool:
        return await self.copier.remove(target)
