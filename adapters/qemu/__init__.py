"""Local QEMU target: the embedded hypervisor.

Publish turns the composited raw disk into ``<path>/<image-name>/disk.qcow2`` plus a VM
definition (vm.json and a start.sh launcher), created and **off**. The VM boots the newest
``/boot/vmlinuz-*`` of the disk's Linux partition directly (``-kernel/-initrd``, root by
PARTUUID). A disk without one (no kernel in the OS layer, or a Windows/NTFS disk) is refused
before anything is created: layerbot's disk (GPT, one partition, no EFI system partition, no
boot code) has no boot loader, so the firmware would find nothing to boot and the task would
wait for a power-off that never comes. ``layerbot vm start TASK`` runs the VM headless
(see :mod:`adapters.qemu.vmfiles`); the watcher reads the VM's state files and returns once the
guest powered itself off.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from adapters.base import (
    Backoff,
    Capability,
    CatalogPath,
    ConnectorConfig,
    DiskFormat,
    GuestTimeoutError,
    InsufficientSpaceError,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.qemu import vmfiles
from adapters.qemu.boot import extract_kernel, find_boot_files, find_tool
from adapters.resources import Resource
from adapters.steps import Step
from compositor.paths import UnsafePath, join_inside

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_POLL_SECONDS = 0.5
#: an idle VM (off, nobody started it) is looked at less and less often, up to this
_POLL_MAX_SECONDS = 5.0
#: A VM whose QEMU is gone while state.json still says running for this long has crashed
#: with its monitor (both killed, host reboot).
_STALE_SECONDS = 10.0


class Config(ConnectorConfig):
    #: Linux OS layers booted with the kernel in their /boot: an NTFS disk cannot boot here.
    filesystems: ClassVar[tuple[str, ...] | None] = ("ext4",)
    type: Literal["qemu"]
    #: Where VM directories are created.
    path: CatalogPath
    memory_mb: int = Field(default=1024, ge=128, le=1 << 20)
    cpus: int = Field(default=2, ge=1, le=256)
    #: ``auto``: KVM when /dev/kvm is usable on the host that starts the VM, else TCG.
    accel: vmfiles.Accel = "auto"
    qemu: str = "qemu-system-x86_64"


class QemuVm(Resource):
    """A VM directory (disk, kernel, vm.json, start.sh); removing it stops its QEMU too."""

    kind: ClassVar[str] = "qemu.vm"
    vm_dir: Path
    #: The task whose marker (vmfiles.OWNER) proves the directory is its own; None in rows
    #: recorded before markers existed, which only an empty directory satisfies.
    task_id: str | None = None
    #: When the publish finished (epoch seconds): the watch's deadline counts from it, also in
    #: a runner that takes the task over; None in rows recorded before it was kept.
    published_at: float | None = None

    def describe(self) -> str:
        return f"VM directory {self.vm_dir}"


class Adapter:
    """qemu-img convert cannot continue a half-written qcow2: an upload restarts."""

    type_name: ClassVar[str] = "qemu"
    platform: ClassVar[str] = "QEMU"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        # raw from the compositor: the kernel is read from it; publish writes the qcow2
        return "raw"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    def vm_dir(self, image_name: str) -> Path:
        try:
            return join_inside(self.config.path, image_name)
        except UnsafePath as exc:
            raise PlatformError(f"refusing to create VM {image_name!r}: {exc}") from None

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("create-vm", self, self._create_vm)]

    async def _create_vm(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "raw":
            raise PlatformError(f"the qemu target reads the kernel from a raw disk, "
                                f"not {ctx.artifact_format}")
        await ctx.progress(0.0, "reading the kernel from /boot")
        boot = await find_boot_files(ctx.artifact)  # refuses a disk that cannot boot
        name = ctx.image_name
        if self.vm_dir(name).exists():  # the same template published twice in one second
            name = f"{ctx.image_name}-{ctx.task_id}"
        vm_dir = self.vm_dir(name)
        await ctx.record(QemuVm(vm_dir=vm_dir, task_id=ctx.task_id))
        try:
            self.config.path.mkdir(parents=True, exist_ok=True)
            vmfiles.create_owned_dir(vm_dir, ctx.task_id)
        except FileExistsError:
            raise PlatformError(f"cannot create the VM directory {vm_dir}: it already exists "
                                f"and is not this task's; it was left untouched") from None
        except OSError as exc:
            raise PlatformError(f"cannot create {vm_dir}: {exc.strerror}") from exc
        needed = ctx.artifact.stat().st_blocks * 512
        if shutil.disk_usage(vm_dir).free < needed:
            raise InsufficientSpaceError(f"{self.config.path} has less than {needed >> 20} MiB free")
        kernel = await extract_kernel(ctx.artifact, boot, vm_dir)
        await self._convert(ctx, vm_dir / vmfiles.DISK)
        vm = vmfiles.VmDefinition(
            name=name, task_id=ctx.task_id, memory_mb=self.config.memory_mb,
            cpus=self.config.cpus, accel=self.config.accel, qemu=self.config.qemu,
            kernel=kernel.kernel.name, initrd=kernel.initrd.name if kernel.initrd else None,
            cmdline=kernel.cmdline,
        )
        vmfiles.write_definition(vm, vm_dir)
        launcher = vm_dir / vmfiles.LAUNCHER
        ctx.published = Published(
            link=launcher.resolve().as_uri(),
            summary=f"VM {name} (created, powered off; direct kernel boot of {boot.kernel}) "
                    f"in {vm_dir}",
            resource=QemuVm(vm_dir=vm_dir, task_id=ctx.task_id, published_at=time.time()),
        )

    async def _convert(self, ctx: PublishContext, dest: Path) -> None:
        partial = dest.with_name(vmfiles.PARTIAL_DISK)
        proc = await asyncio.create_subprocess_exec(
            _qemu_img(), "convert", "-p", "-f", ctx.artifact_format, "-O", "qcow2",
            str(ctx.artifact), str(partial),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, process_group=0,  # stays in serve's CPU group (autogroup)
        )
        assert proc.stdout is not None and proc.stderr is not None
        last = -1.0
        try:
            while chunk := await proc.stdout.read(4096):
                for match in _PROGRESS.finditer(chunk):
                    fraction = float(match.group(1)) / 100
                    if fraction - last >= 0.01:
                        last = fraction
                        await ctx.progress(fraction, "writing disk.qcow2")
            err = (await proc.stderr.read()).decode(errors="replace")
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if code != 0:
            partial.unlink(missing_ok=True)
            if "No space left" in err:
                raise InsufficientSpaceError(f"no space left in {self.config.path}")
            raise PlatformError(f"qemu-img convert failed: {err.strip()[-500:]}")
        os.replace(partial, dest)

    def next_steps(self, published: Published) -> str:
        vm = published.expect(QemuVm)
        name, task = vm.vm_dir.name, vm.task_id or "TASK"
        return (
            f"The virtual machine {name} is created, but off. Start it with "
            f"`layerbot vm start {task}`, let it run the connector's scripts; it powers off "
            f"when done and the task changes to Done. Follow its console with "
            f"`layerbot vm console {task}`."
        )

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        vm = published.expect(QemuVm)
        vm_dir, task = vm.vm_dir, vm.task_id or ctx.task_id
        loop = asyncio.get_running_loop()
        # wall-clock: the publish may have been in another process (a takeover)
        deadline = (vm.published_at or time.time()) + ctx.watch_timeout
        seen: tuple[str, float] | None = None
        stale_since: float | None = None
        backoff = Backoff(_POLL_SECONDS, _POLL_MAX_SECONDS)
        while True:
            if not (vm_dir / vmfiles.DEFINITION).exists():
                raise PlatformError(f"the VM directory {vm_dir} was removed")
            state = vmfiles.read_state(vm_dir)
            current = (state["state"], float(state.get("at", 0))) if state else None
            if current != seen and state is not None:
                seen = current
                backoff.reset()
                if state["state"] == vmfiles.OFF:
                    took = float(state.get("stopped_at", time.time())) - float(
                        state.get("started_at", time.time()))
                    await ctx.progress(1.0, f"the guest ran its scripts and powered off "
                                            f"({took:.0f} s after start)")
                    return
                await ctx.progress(0.5 if state["state"] == vmfiles.RUNNING else 0.0,
                                   _describe(state, task))
            if state is not None and state["state"] == vmfiles.RUNNING \
                    and vmfiles.on_this_host(state) and vmfiles.qemu_pid(vm_dir) is None:
                stale_since = stale_since or loop.time()
                if loop.time() - stale_since > _STALE_SECONDS:
                    vmfiles.write_state(vm_dir, vmfiles.STOPPED,
                                        reason="QEMU and its monitor are gone (host restart?)")
            else:
                stale_since = None
            if time.time() > deadline:
                raise GuestTimeoutError(
                    f"the guest did not power off within {ctx.watch_timeout:.0f} s; "
                    f"see {vm_dir / vmfiles.SERIAL_LOG}")
            await backoff.sleep()

    async def remove(self, resource: Resource) -> list[str]:
        """Remove a half-made VM (its QEMU too, if someone started it)."""
        assert isinstance(resource, QemuVm), resource
        if await asyncio.to_thread(vmfiles.remove_vm, resource.vm_dir, resource.task_id or ""):
            return [resource.describe()]
        return []

    @staticmethod
    def legacy_resources(old: Mapping[str, Any]) -> list[Resource]:
        return [QemuVm(vm_dir=old["vm_dir"])] if old.get("vm_dir") else []

    @staticmethod
    def legacy_published(old: Mapping[str, Any]) -> Resource | None:
        return QemuVm(vm_dir=old["vm_dir"], task_id=old.get("task_id")) if old.get("vm_dir") \
            else None

    async def close(self) -> None:
        """Nothing to release: VMs outlive the runner."""


def _describe(state: dict[str, Any], task: str) -> str:
    what = state["state"]
    if what == vmfiles.RUNNING:
        return f"the VM is running ({state.get('accel', '?')}); waiting for the guest to power off"
    if what == vmfiles.STARTING:
        return "the VM is starting"
    if what == vmfiles.FAILED:
        return f"the VM did not start: {state.get('error', '')}; fix it and `layerbot vm start {task}`"
    return (f"the VM stopped without a guest power-off ({state.get('reason', 'unknown')}); "
            f"start it again with `layerbot vm start {task}`")


def _qemu_img() -> str:
    return find_tool("qemu-img", "qemu-utils")
