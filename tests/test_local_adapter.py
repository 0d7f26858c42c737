"""The local folder target: sparse copies, cancellation, cleanup."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PublishContext, clean_up, publish
from adapters.local import Adapter, Config, LocalFile, LocalUpload
from adapters.steps import Outcome


def context(tmp_path: Path, artifact: Path, progress: Any = None) -> PublishContext:
    async def report(fraction: float, note: str) -> None:
        if progress is not None:
            await progress(fraction)

    return PublishContext(task_id="t1", template="tpl", image_name="tpl-1", artifact=artifact,
                          artifact_format="raw", virtual_size=artifact.stat().st_size,
                          progress=report)


def sparse_file(path: Path, size: int, data_at: list[int]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset in data_at:
            fh.seek(offset)
            fh.write(os.urandom(1 << 20))
    return path


async def test_copy_keeps_the_file_sparse_and_identical(tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "disk.img", 256 << 20, [0, 100 << 20])
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    published = await publish(adapter, context(tmp_path, src))
    dest = tmp_path / "out" / "tpl" / "t1.img"
    assert published.link == dest.resolve().as_uri()
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_blocks * 512 < 8 << 20  # 2 MiB of data, not 256 MiB
    assert not list(dest.parent.glob("*.partial"))


async def test_cancel_stops_the_copy_and_leaves_no_partial_file(tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "disk.img", 512 << 20, list(range(0, 512 << 20, 2 << 20)))
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    started = asyncio.Event()

    async def progress(fraction: float) -> None:
        started.set()

    ctx = context(tmp_path, src, progress)
    job = asyncio.create_task(publish(adapter, ctx))
    await asyncio.wait_for(started.wait(), 30)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    out = tmp_path / "out" / "tpl"
    assert list(out.iterdir()) == []
    assert ctx.resources == []  # nothing left to remove
    assert await clean_up(adapter, ctx, Outcome.FAILED) == []


async def test_a_file_already_at_the_destination_fails_the_publish_and_is_kept(
        tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "disk.img", 4 << 20, [0])
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    dest = tmp_path / "out" / "tpl" / "t1.img"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"someone else's image")
    ctx = context(tmp_path, src)
    with pytest.raises(Exception, match="already exists and was not written by task t1"):
        await publish(adapter, ctx)
    await clean_up(adapter, ctx, Outcome.FAILED)
    assert dest.read_bytes() == b"someone else's image"


async def test_cleanup_leaves_a_file_that_replaced_the_tasks_own(tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "disk.img", 4 << 20, [0])
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    ctx = context(tmp_path, src)
    await publish(adapter, ctx)
    dest = tmp_path / "out" / "tpl" / "t1.img"
    dest.unlink()
    dest.write_bytes(b"a new file by someone else")
    assert await clean_up(adapter, ctx, Outcome.FAILED) == []
    assert dest.read_bytes() == b"a new file by someone else"


async def test_a_takeover_waits_for_the_old_runner_and_never_writes_into_its_linked_copy(
        tmp_path: Path) -> None:
    """The runner that lost the task finishes (link included) under its lock: the new one,
    waiting for that lock, takes the linked copy as its own instead of truncating and rewriting
    the published file (or failing because the file appeared)."""
    data = os.urandom(32 << 20)
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    dest = tmp_path / "out" / "tpl" / "t1.img"
    partial = dest.with_name("t1.img.partial")
    dest.parent.mkdir(parents=True)
    partial.write_bytes(data[:16 << 20])
    old = os.open(partial, os.O_WRONLY)
    fcntl.flock(old, fcntl.LOCK_EX)
    ctx = context(tmp_path, src)
    ctx.resources.append(LocalUpload(path=partial))  # what the store holds for the task
    job = asyncio.create_task(publish(adapter, ctx))
    await asyncio.sleep(0.5)  # the new runner verified the 16 MiB and waits for the lock
    assert not job.done()
    os.pwrite(old, data[16 << 20:], 16 << 20)
    os.link(partial, dest)
    finished = os.stat(dest)
    os.close(old)  # the old runner is done
    published = await asyncio.wait_for(job, 30)
    after = os.stat(dest)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        finished.st_ino, finished.st_mtime_ns, len(data))  # not written again
    assert dest.read_bytes() == data and not partial.exists()
    assert published.resource == LocalFile(path=dest, identity=(after.st_ino, after.st_mtime_ns))


async def test_a_cancel_while_the_copy_is_linked_into_place_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link runs in a thread: a cancel arriving meanwhile must wait for it. Otherwise the
    cleanup runs alongside: it finds no finished file yet (and forgets it), the link lands,
    and the file stays in the folder with nothing recording it."""
    import threading

    import adapters.local as local

    src = sparse_file(tmp_path / "disk.img", 4 << 20, [0])
    adapter = Adapter(Config(type="local", path=tmp_path / "out", format="raw"))
    linking, go_on, linked = threading.Event(), threading.Event(), threading.Event()
    real_link, real_remove = local._link_into_place, adapter.remove

    def held_link(*args: Any) -> None:
        linking.set()
        go_on.wait(1.0)  # the cleanup lets it go on between its two removals (if it runs now)
        try:
            real_link(*args)
        finally:
            linked.set()

    async def remove(resource: Any) -> list[str]:
        if isinstance(resource, LocalUpload):
            go_on.set()
            await asyncio.to_thread(linked.wait, 5)
        return await real_remove(resource)

    monkeypatch.setattr(local, "_link_into_place", held_link)
    monkeypatch.setattr(adapter, "remove", remove)
    ctx = context(tmp_path, src)
    job = asyncio.create_task(publish(adapter, ctx))
    while not linking.is_set():
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await clean_up(adapter, ctx, Outcome.CANCELLED)
    assert list((tmp_path / "out" / "tpl").iterdir()) == []
    assert ctx.resources == []
