"""Staging tree -> partitioned raw disk with an ext4 filesystem (the "ext4" filesystem builder)."""

from __future__ import annotations

import threading
from pathlib import Path

from . import bigdirs, disk, stage
from .fixup import fixup_script, times_script
from .identity import DiskIdentity
from .meta import Meta
from .progress import Reporter
from .threads import in_thread


async def build_ext4_disk(
    staging: Path, meta: dict[str, Meta], raw: Path, work: Path, size_gib: int,
    identity: DiskIdentity, cancel: threading.Event, report: Reporter,
) -> None:
    summary = await in_thread(cancel, stage.summarize, staging, meta, cancel)
    layout = disk.layout_for(size_gib)
    disk.check_fits(layout, summary.content_bytes, size_gib)
    spread = await in_thread(cancel, bigdirs.spread_big_dirs, staging, summary.big_dirs,
                             identity.token("spread", 8), identity.epoch)
    fixes = fixup_script(summary.fixes, spread.moved)
    fixes += await in_thread(cancel, times_script, meta, spread.moved, identity.epoch)
    await in_thread(cancel, stage.set_dir_mtimes, staging, summary.dir_mtimes)
    report.stage("partitioning the disk", 0.55)
    await disk.create_partitioned(raw, layout, identity.seed)
    report.stage(f"creating ext4 ({summary.entries} entries)", 0.6)
    await disk.make_ext4(raw, layout, staging, summary.entries, summary.content_bytes, size_gib,
                         identity)
    if fixes:
        report.stage(f"setting owners, modes and times ({summary.entries} entries)", 0.7)
        await disk.run_debugfs(raw, layout, fixes, work / "fixup.debugfs", identity)
    if spread.relink:
        report.stage(f"relinking {len(summary.big_dirs)} large directories", 0.75)
        await disk.index_directories(raw, layout, identity)
        await disk.run_debugfs(raw, layout, spread.relink, work / "relink.debugfs", identity)
    # the superblock's "lifetime writes" counts what mke2fs wrote, which depends on the host
    # filesystem (one that cannot zero a range gets zeros written): the same key, the same bytes
    await disk.run_debugfs(raw, layout, ["ssv kbytes_written 0"], work / "pin.debugfs", identity)
