"""Microsoft Hyper-V adapter: PowerShell remoting (pypsrp) plus an SMB copy (smbprotocol).

Publish: the compositor's disk (generation 2: VHDX; generation 1: a fixed VHD) is copied to
``share`` over SMB (:mod:`adapters.windows_remote.smb_copy`), then on ``host`` (every value a
script parameter, :mod:`adapters.hyperv.hyperv_scripts`): ``New-VM -Name -Generation
-MemoryStartupBytes -VHDPath <share_local_path\\file> -SwitchName``, ``Set-VM -Notes`` (the
task, so a cleanup never removes a VM it did not make), ``Set-VMProcessor -Count`` and, for
generation 2 with ``secure_boot``, ``Set-VMFirmware``. The VM is left Off. The watch polls
``Get-VM`` (one query per host for every waiting task, :mod:`adapters.hyperv.hyperv_watch`):
Running, then Off -> Done. Cleanup: ``Remove-VM -Force`` (turned off first) and the copied disk.

Example connector (layerbot.yml)::

    connectors:
      hyperv-lab:
        type: hyperv
        host: hv01.lab.example            # WinRM over HTTPS (5986); https: false for 5985
        user_env: HYPERV_USER             # names of environment variables, e.g. LAB\\svc-layerbot
        password_env: HYPERV_PASSWORD
        auth: kerberos                    # ntlm (default) | kerberos | credssp
        share: \\\\hv01.lab.example\\layerbot     # where the disk is copied (SMB)
        share_local_path: D:\\Hyper-V\\layerbot   # the same folder on the host
        switch: LabSwitch
        generation: 2                     # 2: VHDX, UEFI; 1: VHD, BIOS
        memory_mb: 8192
        cpus: 4
        secure_boot: MicrosoftWindows     # generation 2: a template name or "off"
        console_url: https://wac.lab.example/computerManagement/connections/computer/{host}/tools/vms
        scripts: [scripts/activate-office.cmd]
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from adapters.base import (
    Capability,
    DiskFormat,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    next_report,
)
from adapters.hyperv import hyperv_scripts as scripts
from adapters.hyperv.hyperv_config import Config
from adapters.hyperv.hyperv_resources import HypervDisk, HypervPublished, HypervVm, HypervVmRan
from adapters.hyperv.hyperv_watch import Seen, watching
from adapters.resources import Resource, latest
from adapters.steps import Step
from adapters.windows_remote.powershell import Endpoint, RemoteClients, acquire
from adapters.windows_remote.smb_copy import SmbCopier, SmbShare
from adapters.windows_remote.winrm_settings import safe_file_name

__all__ = ["Adapter", "Clients", "Config", "HypervDisk", "HypervPublished", "HypervVm", "HypervVmRan"]

#: how the adapter reaches the host (tests inject the PowerShell runner and short timings)
Clients = RemoteClients

NEXT_STEPS = (
    "The virtual machine {name} is created, but off. Power it on in Hyper-V Manager or Windows "
    "Admin Center ({where}), log in as a local user, and let the machine run the scripts "
    "specified in the connector configuration; shut it down when it is in the desired state "
    "and the task changes to Done."
)


class Adapter:
    type_name: ClassVar[str] = "hyperv"
    platform: ClassVar[str] = "Microsoft Hyper-V"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config, clients: RemoteClients | None = None) -> None:
        self.config = config
        self.clients = clients or RemoteClients()
        self.endpoint = Endpoint.of(config)
        self._key, self.session = acquire(self.endpoint, self.clients)
        self.smb = SmbCopier(SmbShare.of(config, self.clients.timeout), self.clients.chunk_size,
                             self.clients.smb_retry)
        self._closed = False

    @classmethod
    def format_for(cls, config: Config) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "vhdx" if config.generation == 2 else "vhd"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("copy", self, self._copy), PlatformStep("vm", self, self._vm)]

    async def _copy(self, ctx: PublishContext) -> None:
        wanted = self.disk_format()
        if ctx.artifact_format != wanted:
            raise PlatformError(f"{self.platform}: generation {self.config.generation} needs a "
                                f"{wanted} disk, got {ctx.artifact_format}")
        name = safe_file_name(ctx.image_name, f".{wanted}")
        disk = HypervDisk(unc=self.config.share_file(name), local_path=self.config.local_file(name))
        await ctx.record(disk)
        await ctx.progress(0.0, f"copying the disk to {disk.unc}")

        async def progress(done: int, total: int) -> None:
            await ctx.progress(done / total if total else 1.0,
                               f"copied {done >> 20} of {total >> 20} MiB to {disk.unc}")

        await self.smb.copy(ctx.artifact, disk.unc, progress)

    async def _vm(self, ctx: PublishContext) -> None:
        cfg, name = self.config, ctx.image_name
        disk: HypervDisk = _need(latest(ctx.resources, HypervDisk), "the copied disk")
        pending = HypervVm(name=name, host=cfg.host, notes=f"layerbot task {ctx.task_id}",
                           vhd_path=disk.local_path)
        await ctx.record(pending)
        await ctx.progress(0.0, f"creating VM {name} on {cfg.host}")
        [made] = await self.session.run(scripts.new_vm(
            name, cfg.generation, cfg.memory_mb * 2**20, disk.local_path, cfg.switch, pending.notes))
        vm_id = str(made["VMId"])
        await ctx.replace(pending, pending.model_copy(update={"vm_id": vm_id}))
        # settings of the VM made above: the same again changes nothing, so retried
        await self.session.run(scripts.set_processor(vm_id, cfg.cpus), idempotent=True)
        if cfg.generation == 2 and cfg.secure_boot is not None:
            await self.session.run(scripts.set_secure_boot(vm_id, cfg.secure_boot), idempotent=True)
        if made.get("State") != "Off":
            raise PlatformError(f"{self.platform}: VM {name} is {made.get('State')}, expected Off")
        await ctx.progress(1.0, f"VM {name} is created, Off")
        link = (cfg.console_url.format(name=name, host=cfg.host) if cfg.console_url
                else f"VM {name} on {cfg.host}")
        ctx.published = Published(
            link=link, summary=f"Hyper-V VM {name} (generation {cfg.generation}) on {cfg.host}, Off",
            resource=HypervPublished(name=name, host=cfg.host, vm_id=vm_id, published_at=time.time(),
                                     disk_written=Seen.of(made).disk_written))

    def next_steps(self, published: Published) -> str:
        vm = published.expect(HypervPublished)
        return NEXT_STEPS.format(name=vm.name, where=f"{vm.name} on {vm.host}")

    # ------------------------------------------------------------ watch
    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        vm = published.expect(HypervPublished)
        timeout = self.config.watch_timeout or ctx.watch_timeout
        deadline = vm.published_at + timeout
        ran = any(isinstance(r, HypervVmRan) and r.vm_id == vm.vm_id for r in ctx.resources)
        await ctx.progress(0.0, f"waiting for VM {vm.name} to be powered on and shut down")
        async with watching(self.endpoint, self.clients, vm.vm_id, vm.name) as reports:
            while True:
                report = await next_report(
                    reports, deadline,
                    f"{self.platform}: waited {timeout:g} s for VM {vm.name} to be powered on "
                    "and shut down (watch_timeout)")
                seen = report.get(vm.vm_id)
                if seen is None:
                    raise PlatformError(f"{self.platform}: VM {vm.name} ({vm.vm_id}) on {vm.host} was "
                                        "deleted before it ran and shut down")
                if seen.running and not ran:
                    ran = True
                    await ctx.record(HypervVmRan(vm_id=vm.vm_id))
                    await ctx.progress(0.5, f"VM {vm.name} is running; waiting for it to shut down")
                elif seen.off and (ran or _written_since(seen, vm)):
                    # a power cycle shorter than a round is seen only by its disk's writes
                    await ctx.progress(1.0, f"VM {vm.name} has shut down")
                    return

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, HypervVm):
            gone = await self.session.run(scripts.remove_vm(resource.name, resource.vm_id, resource.notes,
                                                            resource.vhd_path))
            return [resource.describe()] if gone else []
        if isinstance(resource, HypervDisk):
            return [resource.describe()] if await self.smb.remove(resource.unc) else []
        raise PlatformError(f"{self.platform}: cannot remove {resource.describe()}")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.smb.close()
            await self.clients.pool.release(self._key, self.session)


def _written_since(seen: Seen, vm: HypervPublished) -> bool:
    return (seen.disk_written is not None and vm.disk_written is not None
            and seen.disk_written > vm.disk_written)


def _need(resource: Resource | None, what: str) -> Any:
    if resource is None:
        raise PlatformError(f"Microsoft Hyper-V: {what} was not recorded")
    return resource
