"""A Provisioning connector with ``hypervisor``: the vDisk, then the target VM made by the
adapter of the named connector, which also watches it (its steps, cleanup and watch, composed).

The hypervisor adapter's steps run on a copy of the task's context that shares its resource
list, persistence and progress (what it records is the task's), with the artifact in the
format that adapter wants: the vhdx converted by qemu-img into the work folder when it wants
another (a STAGING file, removed after the publish)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import adapters
from adapters.base import (
    Adapter as AdapterProtocol,
)
from adapters.base import (
    Capability,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    Watcher,
)
from adapters.pvs.pvs_adapter import PLATFORM, Adapter, Clients
from adapters.pvs.pvs_config import Config
from adapters.pvs.pvs_resources import PvsConvertedDisk, PvsPublished
from adapters.resources import Resource
from adapters.steps import Outcome, Step

log = logging.getLogger(__name__)
#: closes under way on the event loop (a task nobody references may be collected unfinished)
_CLOSING: set[asyncio.Task[None]] = set()


class WithHypervisor(Adapter):
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        clients = clients or Clients()
        # first: a hypervisor that cannot be created leaves no session of ours open
        self.hypervisor: AdapterProtocol = adapters.create(config.linked("hypervisor"),
                                                           clients.hypervisor)
        try:
            if Capability.WATCH_POWER not in self.hypervisor.capabilities:
                raise PlatformError(f"{PLATFORM}: hypervisor {config.hypervisor!r} "
                                    f"({self.hypervisor.platform}) cannot watch a VM")
            super().__init__(config, clients)
        except BaseException:
            _close_soon(self.hypervisor)
            raise

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        fmt = self.hypervisor.disk_format()
        vm_ctx = dataclasses.replace(ctx)  # shares resources, persist, progress and removed
        own = super().steps(ctx)
        convert: list[Step[PublishContext]] = []
        if fmt != ctx.artifact_format:
            work = ctx.scratch_dir or Path(tempfile.gettempdir())
            vm_ctx.artifact_format = fmt
            convert.append(PlatformStep(f"convert to {fmt}", self,
                                        lambda c: self._convert(c, vm_ctx, work)))
        vm = [OnContext(step, vm_ctx) for step in self.hypervisor.steps(vm_ctx)]
        return [*own, *convert, *vm, PlatformStep("published", self, lambda c: _combine(c, vm_ctx))]

    async def _convert(self, ctx: PublishContext, vm_ctx: PublishContext, work: Path) -> None:
        from compositor.convert import reformat
        from compositor.sweep import BUILD_PREFIX, owner_prefix

        work.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=owner_prefix(BUILD_PREFIX), suffix=f".{vm_ctx.artifact_format}",
                                    dir=work)
        os.close(fd)
        os.unlink(name)  # qemu-img creates it; the name is ours
        await ctx.record(PvsConvertedDisk(path=Path(name)))
        await ctx.progress(0.0, f"converting the disk to {vm_ctx.artifact_format}")
        await reformat(ctx.artifact, ctx.artifact_format, vm_ctx.artifact_format, Path(name),
                       lambda fraction: None)
        vm_ctx.artifact = Path(name)

    def next_steps(self, published: Published) -> str:
        return f"{super().next_steps(published)} {self.hypervisor.next_steps(_vm(published))}"

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        assert isinstance(self.hypervisor, Watcher)  # checked in __init__
        await self.hypervisor.wait_for_shutdown(_vm(published), ctx)

    async def remove(self, resource: Resource) -> list[str]:
        if resource.kind.startswith("pvs."):
            return await super().remove(resource)
        return await self.hypervisor.remove(resource)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.hypervisor.close()


def _close_soon(adapter: AdapterProtocol) -> None:
    """Close ``adapter``: on the running event loop as a task of its own (its sessions belong
    to that loop, and the loop must not wait for the close), else to the end here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        adapters.close_blocking(adapter)
        return
    task = loop.create_task(adapter.close(), name=f"close {adapter.platform} adapter")
    _CLOSING.add(task)
    task.add_done_callback(_closed)


def _closed(task: asyncio.Task[None]) -> None:
    _CLOSING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("closing the hypervisor adapter failed: %s", task.exception())


class OnContext:
    """A hypervisor step run on its own context (the task's, with its artifact)."""

    def __init__(self, step: Step[PublishContext], ctx: PublishContext) -> None:
        self.step = step
        self.name = f"hypervisor: {step.name}"
        self.ctx = ctx

    async def run(self, ctx: PublishContext) -> None:
        await self.step.run(self.ctx)

    async def cleanup(self, ctx: PublishContext, outcome: Outcome) -> None:
        await self.step.cleanup(self.ctx, outcome)


def _vm(published: Published) -> Published:
    disk = published.expect(PvsPublished)
    if disk.vm is None:
        raise PlatformError(f"{PLATFORM}: vDisk {disk.name} was published without its VM")
    return Published.from_json(disk.vm, where=f"vDisk {disk.name}")


async def _combine(ctx: PublishContext, vm_ctx: PublishContext) -> None:
    disk, vm = ctx.published, vm_ctx.published
    if disk is None or vm is None:
        raise PlatformError(f"{PLATFORM}: the vDisk or the VM was not published")
    ctx.published = Published(
        link=vm.link, summary=f"{disk.summary}; {vm.summary}",
        resource=disk.expect(PvsPublished).model_copy(update={"vm": vm.to_json()}))
