"""A sparse GPT disk with one ext4 partition built from the staging tree, rootless.

No mount, no loop device, no root: mke2fs writes the filesystem straight into the partition
(`-E offset=`), then debugfs gives the inodes their true owners, modes and device numbers.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from . import tool_runner
from .errors import DiskTooSmallError, HostSpaceError, ToolFailedError, host_full
from .gpt import write_gpt
from .identity import DiskIdentity
from .tools import tool_path

SECTOR = 512
PARTITION_START_SECTOR = 2048  # 1 MiB
_ALIGN_SECTORS = 2048  # the partition also ends on a MiB boundary
_GPT_BACKUP_SECTORS = 33  # backup header + 32 sectors of partition entries
FS_BLOCK = 4096
_INODE_RATIO = 16384
_INODE_SIZE = 256
LINUX_FS_TYPE = "8300"


@dataclass(frozen=True)
class Layout:
    disk_bytes: int
    first_sector: int
    last_sector: int

    @property
    def offset(self) -> int:
        return self.first_sector * SECTOR

    @property
    def fs_blocks(self) -> int:
        return (self.last_sector - self.first_sector + 1) * SECTOR // FS_BLOCK

    def image_arg(self, raw: Path) -> str:
        """A path the e2fsprogs unix I/O manager opens at the partition's offset."""
        return f"{raw}?offset={self.offset}"


def layout_for(size_gib: int) -> Layout:
    disk_bytes = size_gib << 30
    last_usable = disk_bytes // SECTOR - _GPT_BACKUP_SECTORS - 1
    last = (last_usable + 1) // _ALIGN_SECTORS * _ALIGN_SECTORS - 1
    return Layout(disk_bytes, PARTITION_START_SECTOR, last)


def _journal_blocks(blocks: int) -> int:
    """mke2fs's default journal size (ext2fs_default_journal_size)."""
    for limit, size in ((32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192),
                        (4096 * 1024, 16384), (8192 * 1024, 32768), (16384 * 1024, 65536),
                        (32768 * 1024, 131072)):
        if blocks < limit:
            return size
    return 262144


def fs_capacity(layout: Layout) -> int:
    """Bytes left for files after ext4's own metadata (inode tables, journal, group overhead)."""
    blocks = layout.fs_blocks
    overhead = blocks * FS_BLOCK // _INODE_RATIO * _INODE_SIZE
    overhead += _journal_blocks(blocks) * FS_BLOCK
    overhead += blocks * FS_BLOCK // 100  # bitmaps, descriptors, reserved GDT, extent blocks
    return blocks * FS_BLOCK - overhead


def check_fits(layout: Layout, content_bytes: int, size_gib: int) -> None:
    capacity = fs_capacity(layout)
    if content_bytes > capacity:
        raise DiskTooSmallError(content_bytes, capacity, size_gib)


async def create_partitioned(raw: Path, layout: Layout, seed: str) -> None:
    def make() -> None:
        with open(raw, "wb") as fh:
            fh.truncate(layout.disk_bytes)
        write_gpt(
            raw, total_sectors=layout.disk_bytes // SECTOR, first=layout.first_sector,
            last=layout.last_sector, name="root", seed=seed,
        )

    await asyncio.to_thread(make)


async def make_ext4(
    raw: Path, layout: Layout, staging: Path, entries: int, content_bytes: int, size_gib: int,
    identity: DiskIdentity,
) -> None:
    inodes = max(layout.fs_blocks * FS_BLOCK // _INODE_RATIO, entries + entries // 10 + 1024)
    extended = (f"offset={layout.offset},root_owner=0:0,"
                f"hash_seed={identity.uuid('ext4 hash seed')}")
    argv = [
        tool_path("mke2fs"), "-q", "-F", "-t", "ext4", "-b", str(FS_BLOCK), "-N", str(inodes),
        "-L", "root", "-U", str(identity.uuid("ext4 uuid")), "-E", extended,
        "-d", staging, raw, str(layout.fs_blocks),
    ]
    try:
        await tool_runner.run(argv, env=identity.e2fsprogs_env())
    except ToolFailedError as exc:
        if "No space left on device" in exc.stderr and host_full(raw.parent):
            raise HostSpaceError(raw.parent, "writing the ext4 disk image") from exc
        # the image is full: "Could not allocate block/inode in ext2 filesystem"
        if "allocate" in exc.stderr or "space" in exc.stderr:
            raise DiskTooSmallError(content_bytes, fs_capacity(layout), size_gib) from exc
        raise


async def run_debugfs(raw: Path, layout: Layout, script: list[str], script_path: Path,
                      identity: DiskIdentity) -> None:
    """Run a debugfs -w script; any error line fails the build (debugfs itself exits 0)."""
    def write() -> None:
        with open(script_path, "wb") as fh:
            for line in script:
                fh.write(os.fsencode(line) + b"\n")

    await asyncio.to_thread(write)
    done = await tool_runner.run(
        [tool_path("debugfs"), "-w", "-f", script_path, layout.image_arg(raw)],
        env=identity.e2fsprogs_env(),
    )
    problems = [
        line for line in done.stderr.splitlines()
        if line.strip() and not line.startswith("debugfs ")
    ]
    if problems:
        raise ToolFailedError("debugfs", 0, "\n".join(problems[:10]))


async def index_directories(raw: Path, layout: Layout, identity: DiskIdentity) -> None:
    """e2fsck -fD: rebuild directories as hashed (htree) ones."""
    await tool_runner.run([tool_path("e2fsck"), "-f", "-y", "-D", layout.image_arg(raw)],
                     ok_codes=(0, 1), env=identity.e2fsprogs_env())


async def check_fs(raw: Path, layout: Layout) -> None:
    await tool_runner.run([tool_path("e2fsck"), "-f", "-n", layout.image_arg(raw)])
