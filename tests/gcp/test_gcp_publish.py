"""The whole gcp publish against both peers: the storage emulator (behind the counting proxy
of conftest.py) and the Compute double, which checks that rawDisk.source names the uploaded
object: publish -> a VM from the image RUNNING then TERMINATED -> Done; an upload cut off
and resumed by a second runner; keep_object."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from adapters import resources
from adapters.base import PublishContext, clean_up, publish
from adapters.gcp import Adapter, storage
from adapters.gcp.storage import GcsUpload
from adapters.resources import Lifetime
from adapters.retry import RetryPolicy
from adapters.steps import Outcome, detach

from .compute_double import ComputeDouble
from .compute_fixtures import clients, compute, connector, context, object_check
from .conftest import BUCKET, Proxy
from .test_gcp_compute import _vm

__all__ = ["compute"]
pytestmark = pytest.mark.timeout(90)
CHUNK = 256 * 1024
QUICK = RetryPolicy(attempts=4, budget=30.0, first_delay=0.05, max_delay=0.2)


def tarball(tmp_path: Path, size: int = 12 * CHUNK + 1000) -> Path:
    path = tmp_path / "disk.tar.gz"
    path.write_bytes(os.urandom(size))
    return path


def objects(emulator: Any) -> list[str]:
    """From the emulator's own state: its HTTP API from this event loop's thread would block
    the loop that runs the proxy in front of it."""
    found, _ = emulator.storage.get_file_list(BUCKET)
    return sorted(o["name"] for o in found)


def adapter_for(double: ComputeDouble, gcs: Proxy, **more: Any) -> Adapter:
    double.object_exists = object_check(gcs.url)
    return Adapter(connector(double, gcs.url, **more),
                   clients(chunk_size=CHUNK, timeout=30.0, retry=QUICK))


async def test_publish_then_a_vm_runs_and_stops_then_done(compute: ComputeDouble, gcs: Proxy,
                                                          emulator: Any, tmp_path: Path) -> None:
    adapter = adapter_for(compute, gcs)
    artifact = tarball(tmp_path)
    ctx = context("win10-20260101-000000-abc123", artifact)
    try:
        published = await publish(adapter, ctx)
        assert compute.images["win10-20260101-000000-abc123"]["status"] == "READY"
        assert objects(emulator) == []  # staging: deleted once the image is READY
        [image] = [r for r in ctx.resources if r.lifetime is Lifetime.PARTIAL]
        assert image.kind == "gcp.image"
        wait = asyncio.create_task(adapter.wait_for_shutdown(published, ctx))
        await _vm(compute, adapter, "create", "admin-vm", image="win10-20260101-000000-abc123")
        while not any(r.kind == "gcp.instance_ran" for r in ctx.resources):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert not wait.done()  # running: not Done yet
        await _vm(compute, adapter, "stop", "admin-vm")
        await asyncio.wait_for(wait, 10)
    finally:
        await adapter.close()


async def test_keep_object_keeps_the_tarball(compute: ComputeDouble, gcs: Proxy, emulator: Any,
                                             tmp_path: Path) -> None:
    adapter = adapter_for(compute, gcs, keep_object=True)
    try:
        await publish(adapter, context("win10-keep", tarball(tmp_path)))
    finally:
        await adapter.close()
    assert objects(emulator) == ["layerbot/win10/t0c0ffee.tar.gz"]


async def test_upload_cut_off_is_resumed_by_a_second_runner(compute: ComputeDouble, gcs: Proxy,
                                                            emulator: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = tarball(tmp_path)
    stored: list[dict[str, object]] = []
    job: list[asyncio.Task[Any]] = []
    chunks = 0

    async def persist(now: list[resources.Resource]) -> None:
        stored[:] = resources.dump(now)

    async def progress(fraction: float, note: str) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 4 and job:  # the runner dies a few chunks in
            detach(job[0])

    first = adapter_for(compute, gcs)
    ctx = PublishContext(task_id="t0c0ffee", template="win10", image_name="win10-resumed",
                         artifact=artifact, artifact_format="gce-tar", virtual_size=1 << 30,
                         progress=progress, persist=persist)
    try:
        job.append(asyncio.create_task(publish(first, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    sent_first = gcs.sent()
    assert 0 < sent_first < artifact.stat().st_size and compute.images == {}

    checksums: list[Path] = []
    real_crc32c = storage.file_crc32c

    def counted_crc32c(path: Path) -> str:
        checksums.append(path)
        return real_crc32c(path)

    monkeypatch.setattr(storage, "file_crc32c", counted_crc32c)
    second = adapter_for(compute, gcs)
    notes: list[str] = []
    later = context("win10-resumed", artifact, resources=resources.load(stored, where="test"),
                    notes=notes)
    try:
        await publish(second, later)
    finally:
        await second.close()
    assert "resuming the upload" in notes[0]
    assert checksums == [artifact]  # the takeover reads the tarball once
    # only the rest was sent (a chunk may be sent again when it was cut off mid-way)
    assert gcs.sent() - sent_first <= artifact.stat().st_size - sent_first + CHUNK
    assert compute.images["win10-resumed"]["status"] == "READY"
    assert objects(emulator) == [] and not any(isinstance(r, GcsUpload) for r in later.resources)
    await clean_up(second, later, Outcome.FAILED)
