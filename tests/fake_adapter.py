"""A test adapter whose behaviour the catalog sets: it creates a real "VM" file so
cleanup can be checked, and can fail, block or wait for a "power off" file."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from adapters.base import (
    Backoff,
    Capability,
    CatalogPath,
    ConnectorConfig,
    DiskFormat,
    GuestTimeoutError,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.resources import Lifetime, Resource
from adapters.steps import Step

#: A connector of this type, to splice into tests.conftest.BASIC_CATALOG with with_fake().
FAKE_CONNECTOR = """\
  fake-hv:
    type: fake
    path: ./vms
    scripts: [scripts/setup.sh]
"""


def with_fake(options: str = "") -> str:
    """BASIC_CATALOG with win10-office on the fake hypervisor (WATCH_POWER); ``options`` are
    extra connector settings, one per line."""
    from tests.conftest import BASIC_CATALOG

    connector = FAKE_CONNECTOR + "".join(f"    {line}\n" for line in options.splitlines())
    text = BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + connector, 1)
    return text.replace("connector: folder", "connector: fake-hv")


class Config(ConnectorConfig):
    type: Literal["fake"]
    path: CatalogPath
    fail_upload: bool = False
    block_upload: bool = False
    upload_seconds: float = 0.2
    #: The watch polls for the power-off file, backing off up to this interval.
    poll_max_seconds: float = 0.5
    #: Setting the adapter up fails with an unexpected error (a bad certificate, say).
    broken: bool = False
    #: The upload fails with an unexpected error (a bug, not a platform's answer).
    crash_upload: bool = False


class FakeVm(Resource):
    kind: ClassVar[str] = "fake.vm"
    path: Path

    def describe(self) -> str:
        return f"VM {self.path.name}"


class FakeUpload(Resource):
    """An uploaded blob that only fed the VM (as an Azure blob or a GCS object would)."""

    kind: ClassVar[str] = "fake.upload"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING
    path: Path

    def describe(self) -> str:
        return f"upload {self.path.name}"


class Adapter:
    type_name: ClassVar[str] = "fake"
    platform: ClassVar[str] = "Fake hypervisor"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config) -> None:
        if config.broken:
            raise ValueError("cannot load the CA certificate (simulated)")
        self.config = config

    def disk_format(self) -> DiskFormat:
        return "raw"

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("create-vm", self, self._create_vm)]

    async def _create_vm(self, ctx: PublishContext) -> None:
        vm = self.config.path / f"{ctx.image_name}.vm"
        await ctx.record(FakeVm(path=vm))
        self.config.path.mkdir(parents=True, exist_ok=True)
        with ctx.artifact.open("rb") as disk:
            vm.write_bytes(disk.read(4096))
        for step in range(4):
            await ctx.progress(step / 4, "uploading")
            await asyncio.sleep(self.config.upload_seconds / 4)
        if self.config.block_upload:
            await asyncio.Event().wait()
        if self.config.fail_upload:
            raise PlatformError("the datastore went away (simulated)")
        if self.config.crash_upload:
            raise KeyError("vm_uuid (simulated)")
        ctx.published = Published(link=vm.as_uri(), summary=f"VM {ctx.image_name} (powered off)",
                                  resource=FakeVm(path=vm))

    def next_steps(self, published: Published) -> str:
        return f"{published.summary} is created, but off. Power it on and let the scripts run."

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        vm = published.expect(FakeVm).path
        off = vm.with_name(vm.name + ".off")
        deadline = asyncio.get_running_loop().time() + ctx.watch_timeout
        backoff = Backoff(0.05, self.config.poll_max_seconds)
        while not off.exists():
            if asyncio.get_running_loop().time() > deadline:
                raise GuestTimeoutError("the guest did not shut down in time")
            await backoff.sleep()
        await ctx.progress(1.0, "guest powered off")

    async def remove(self, resource: Resource) -> list[str]:
        assert isinstance(resource, FakeVm | FakeUpload)
        try:
            resource.path.unlink()
        except FileNotFoundError:
            return []
        return [resource.describe()]

    @staticmethod
    def legacy_resources(old: Mapping[str, Any]) -> list[Resource]:
        return [FakeVm(path=old["vm"])] if old.get("vm") else []

    @staticmethod
    def legacy_published(old: Mapping[str, Any]) -> Resource | None:
        return FakeVm(path=old["vm"]) if old.get("vm") else None

    async def close(self) -> None:
        pass
