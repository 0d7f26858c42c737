"""A task taken over by another runner: after its upload step had finished (the disk's
access already revoked), and into a disk that holds another VHD than the artifact."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from adapters import create, resources
from adapters.azure.azure_resources import AzureUploadDisk, AzureUploadFinished
from adapters.azure.publish import AzureAdapterBase
from adapters.base import PublishContext, clean_up, publish
from adapters.resources import Lifetime, Resource, latest
from adapters.steps import Outcome, Step, detach
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import Tls, arm_double, arm_tls, clients, config
from tests.azure.test_azure_publish import blob_bytes, context, vhd

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]
MIB = 1 << 20


def adapter_for(double: ArmDouble, tls: Tls, kind: str) -> AzureAdapterBase:
    made = create(config(double, kind), clients(double, tls))
    assert isinstance(made, AzureAdapterBase)
    return made


def detach_before_step(adapter: AzureAdapterBase, index: int, job: list[asyncio.Task[Any]]) -> None:
    """The runner stops (detach) as the publish's step ``index`` begins."""
    steps = adapter.steps

    def stopping(ctx: PublishContext) -> list[Step[PublishContext]]:
        made = steps(ctx)
        step = made[index]
        run = step.run

        async def stop_then_run(ctx: PublishContext) -> None:
            detach(job[0])
            await asyncio.sleep(0)  # the detach lands here
            await run(ctx)
        step.run = stop_then_run  # type: ignore[method-assign]
        return made
    adapter.steps = stopping  # type: ignore[method-assign]


def stored(ctx: PublishContext) -> list[Resource]:
    """The resources as the next runner reads them back from the store's JSON."""
    return resources.load(resources.dump(ctx.resources), where="test")


@pytest.mark.parametrize("kind", ["azure", "azure-mcs"])
async def test_crash_after_the_upload_step_is_finished_by_another_adapter(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, kind: str) -> None:
    disk_file = vhd(tmp_path / "done.vhd")
    first = adapter_for(arm_double, arm_tls, kind)
    job: list[asyncio.Task[Any]] = []
    detach_before_step(first, 1, job)
    ctx = context(disk_file, "uploaded")
    try:
        job.append(asyncio.create_task(publish(first, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    [disk] = arm_double.disks.values()
    assert disk["properties"]["diskState"] == "Unattached"  # uploaded, access revoked

    second = adapter_for(arm_double, arm_tls, kind)
    notes: list[tuple[float, str]] = []
    again = context(disk_file, "uploaded", notes, stored(ctx))
    try:
        upload = latest(again.resources, AzureUploadDisk)
        assert upload is not None and latest(again.resources, AzureUploadFinished) is not None
        # read through a read SAS, then closed again
        assert await second.uploaded_bytes(upload, disk_file) == 4 * MIB + 512
        assert disk["properties"]["diskState"] == "Unattached"
        grants = arm_double.count("POST", "disks")
        # what the runner does when it takes the task over: it keeps the resumable upload
        await clean_up(second, again, Outcome.FAILED,
                       [r for r in again.resources if r.lifetime is not Lifetime.STAGING])
        published = await publish(second, again)
        assert published.link
        assert second.uploads == []  # nothing sent again, no access asked of the disk
        assert arm_double.count("POST", "disks") - grants == 1  # only the revoke of its delete
        assert notes[0] == (1.0, "resuming: the upload into uploaded-upload had finished")
        assert arm_double.disks == {}  # the staging disk went once the image existed
        await clean_up(second, again, Outcome.FAILED)
        assert not arm_double.images and not arm_double.versions
    finally:
        await second.close()


async def test_a_disk_holding_another_vhd_is_deleted_and_the_upload_starts_over(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    data = {i * 2 * MIB: os.urandom(MIB) for i in range(8)}
    disk_file = vhd(tmp_path / "r.vhd", 32, data)
    first = adapter_for(arm_double, arm_tls, "azure")
    job: list[asyncio.Task[Any]] = []

    async def stop_after_some(fraction: float, note: str) -> None:
        if fraction > 0 and job:
            detach(job[0])
    ctx = context(disk_file, "changed")
    ctx.progress = stop_after_some
    try:
        job.append(asyncio.create_task(publish(first, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    # the same path and size, other bytes (a rebuilt artifact): no page present is this file's
    vhd(disk_file, 32, {offset: os.urandom(MIB) for offset in data})
    second = adapter_for(arm_double, arm_tls, "azure")
    again = context(disk_file, "changed", None, stored(ctx))
    try:
        upload = latest(again.resources, AzureUploadDisk)
        assert upload is not None
        assert await second.uploaded_bytes(upload, disk_file) == 0
        await publish(second, again)
        [stats] = second.uploads
        assert stats.present_bytes == 0 and stats.sent_bytes == 8 * MIB + 512
        assert arm_double.count("DELETE", "disks") == 2  # the stale disk, then the staging one
        [image] = arm_double.images.values()
        assert image["properties"]["provisioningState"] == "Succeeded"
    finally:
        await second.close()


async def test_the_blob_of_a_restarted_upload_equals_the_new_vhd(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    disk_file = vhd(tmp_path / "k.vhd")
    first = adapter_for(arm_double, arm_tls, "azure")
    job: list[asyncio.Task[Any]] = []
    detach_before_step(first, 1, job)
    ctx = context(disk_file, "kept")
    try:
        job.append(asyncio.create_task(publish(first, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    vhd(disk_file)  # rebuilt: other bytes at the same path
    second = create(config(arm_double, keep_disk=True), clients(arm_double, arm_tls))
    again = context(disk_file, "kept", None, stored(ctx))
    try:
        await publish(second, again)
        [disk] = arm_double.disks.values()
        assert await blob_bytes(arm_double, disk["name"]) == disk_file.read_bytes()
    finally:
        await second.close()
