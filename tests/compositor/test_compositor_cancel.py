"""Cancelling a build kills its child processes and leaves no temporary files behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource, build_image

from .child_processes import children
from .layer_builder import directory, file, write_tar


@pytest.mark.parametrize("stage", ["extracting", "converting"])
async def test_cancel_cleans_up(tmp_path: Path, stage: str) -> None:
    before = children()
    noise = os.urandom(1 << 20)
    entries = [directory("data")]
    entries += [file(f"data/blob{i}", noise[i:] + noise[:i]) for i in range(96)]
    layer = write_tar(tmp_path / "os.tar.gz", entries)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="vmdk")
    loop = asyncio.get_running_loop()
    reached = asyncio.Event()

    def progress(note: str, fraction: float) -> None:
        if note.startswith(stage):
            loop.call_soon_threadsafe(reached.set)

    task = asyncio.create_task(build_image(
        spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache", progress=progress
    ))
    await asyncio.wait_for(reached.wait(), 60)
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((tmp_path / "work").iterdir()) == []
    temps = tmp_path / "cache" / "tmp"  # made on the first cache temp: a cancel may come first
    assert not temps.exists() or list(temps.iterdir()) == []
    assert not (tmp_path / "cache" / "images").exists()
    assert children() - before == set()
