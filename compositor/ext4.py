"""Staging tree -> partitioned raw disk with an ext4 filesystem (the "ext4" filesystem builder)."""

from __future__ import annotations

import threading
from pathlib import Path

from . import bigdirs, disk, stage
from .progress import Reporter
from .threads import in_thread


async def build_ext4_disk(
    staging: Path, meta: dict, raw: Path, work: Path, size_gib: int,
    cancel: threading.Event, report: Reporter,
) -> None:
    db = work / "fakeroot.db"
    summary = await in_thread(cancel, stage.summarize, staging, meta, db, cancel)
    layout = disk.layout_for(size_gib)
    disk.check_fits(layout, summary.content_bytes, size_gib)
    script = await in_thread(cancel, bigdirs.spread_big_dirs, staging, summary.big_dirs)
    await in_thread(cancel, stage.set_dir_mtimes, staging, summary.dir_mtimes)
    report.stage("partitioning the disk", 0.55)
    await disk.create_partitioned(raw, layout)
    report.stage(f"creating ext4 ({summary.entries} entries)", 0.6)
    await disk.make_ext4(
        raw, layout, staging, db, summary.entries, summary.content_bytes, size_gib
    )
    if script:
        report.stage(f"relinking {len(summary.big_dirs)} large directories", 0.72)
        await disk.relink_big_dirs(raw, layout, script, work)
