"""A task taken over by another runner: after its upload step had finished (the disk's
access already revoked), and into a disk that holds another VHD than the artifact."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from adapters import create, resources
from adapters.azure.azure_resources import (
    AzureImageVersion,
    AzurePublished,
    AzureUploadDisk,
    AzureUploadFinished,
)
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


async def test_a_version_name_taken_by_another_runner_meanwhile_is_not_overwritten(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Task A records its version name, then its runner dies before the PUT; another runner
    (no claims of A's process) finds the name free at ARM and publishes task B under it. A's
    retake must choose another name: a PUT of the recorded one would replace B's version."""
    from adapters import azure_mcs

    def mcs_adapter() -> AzureAdapterBase:  # every publish of the year renders one name
        made = create(config(arm_double, "azure-mcs", version="{yyyy}.1.0"), clients(arm_double, arm_tls))
        assert isinstance(made, AzureAdapterBase)
        return made

    first, job = mcs_adapter(), []
    create_version = azure_mcs.gallery.create_version

    async def dies_before_the_put(*args: Any) -> str:
        detach(job[0])
        await asyncio.sleep(0)
        return await create_version(*args)
    monkeypatch.setattr(azure_mcs.gallery, "create_version", dies_before_the_put)
    ctx_a = context(vhd(tmp_path / "a.vhd"), "task-a")
    try:
        job.append(asyncio.create_task(publish(first, ctx_a)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    monkeypatch.setattr(azure_mcs.gallery, "create_version", create_version)
    monkeypatch.setattr(azure_mcs, "_CLAIMS", {})  # the other runner is another process
    taken = latest(ctx_a.resources, AzureImageVersion)
    assert taken is not None and arm_double.versions == {}

    other = mcs_adapter()
    try:
        published_b = await publish(other, context(vhd(tmp_path / "b.vhd"), "task-b"))
    finally:
        await other.close()
    assert published_b.expect(AzurePublished).id.endswith(f"/versions/{taken.version}")
    again = mcs_adapter()
    try:
        published_a = await publish(again, context(vhd(tmp_path / "a.vhd"), "task-a", None,
                                                   stored(ctx_a)))
    finally:
        await again.close()
    mine, theirs = published_a.expect(AzurePublished), published_b.expect(AzurePublished)
    assert mine.id != theirs.id and len(arm_double.versions) == 2
    sources = {v["id"]: v["properties"]["storageProfile"]["osDiskImage"]["source"]["id"]
               for v in arm_double.versions.values()}
    assert sources[theirs.id].endswith("/task-b-upload") and sources[mine.id].endswith("/task-a-upload")


async def test_a_version_name_another_runner_makes_first_is_chosen_again(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runners (processes: neither knows the other's claims) find one name free and both
    PUT it: Azure keeps the first version's source and refuses the second PUT; its task
    chooses the next name rather than failing or publishing the other's version."""
    from adapters import azure_mcs

    def mcs_adapter() -> AzureAdapterBase:
        made = create(config(arm_double, "azure-mcs", version="{yyyy}.1.0"), clients(arm_double, arm_tls))
        assert isinstance(made, AzureAdapterBase)
        return made

    create_version = azure_mcs.gallery.create_version
    other, published_b = mcs_adapter(), []

    async def the_other_runner_first(*args: Any) -> str:
        monkeypatch.setattr(azure_mcs.gallery, "create_version", create_version)
        claims = azure_mcs._CLAIMS.copy()
        azure_mcs._CLAIMS.clear()  # the other runner is another process
        published_b.append(await publish(other, context(vhd(tmp_path / "b.vhd"), "task-b")))
        azure_mcs._CLAIMS.update(claims)
        return await create_version(*args)
    monkeypatch.setattr(azure_mcs.gallery, "create_version", the_other_runner_first)
    first = mcs_adapter()
    ctx_a = context(vhd(tmp_path / "a.vhd"), "task-a")
    try:
        published_a = await publish(first, ctx_a)
    finally:
        await first.close()
        await other.close()
    mine, theirs = published_a.expect(AzurePublished), published_b[0].expect(AzurePublished)
    assert theirs.id.endswith(".1.0") and mine.id.endswith(".1.1")
    sources = {v["id"]: v["properties"]["storageProfile"]["osDiskImage"]["source"]["id"]
               for v in arm_double.versions.values()}
    assert sources[theirs.id].endswith("/task-b-upload") and sources[mine.id].endswith("/task-a-upload")
    [recorded] = [r for r in ctx_a.resources if isinstance(r, AzureImageVersion)]
    assert recorded.id == mine.id  # a failed publish's cleanup removes this one only
