"""How a published disk boots under QEMU: its GPT root partition and, for Linux, the
kernel and initrd of its ``/boot`` (direct kernel boot).

Everything is read from the raw disk file, without root or a loop device: the GPT with
:mod:`struct`, the ext4 partition with ``debugfs 'disk?offset=N'``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from adapters.base import PlatformError

SECTOR = 512
#: GPT partition type GUIDs of a Linux root/data partition.
LINUX_TYPES = {
    uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4"),  # Linux filesystem data
    uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),  # Linux root (x86-64)
}
#: Microsoft basic data (NTFS): firmware boot only.
WINDOWS_DATA = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
_SBIN = ("/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Partition:
    number: int
    type_guid: uuid.UUID
    part_guid: uuid.UUID
    first_lba: int
    last_lba: int

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


@dataclass(frozen=True)
class KernelBoot:
    kernel: Path
    initrd: Path | None
    cmdline: str


def read_gpt(disk: Path) -> list[Partition]:
    """The used entries of the primary GPT of a raw disk."""
    with open(disk, "rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        if header[:8] != b"EFI PART":
            raise PlatformError(f"{disk.name} has no GPT partition table")
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * SECTOR)
        table = f.read(count * entry_size)
    parts = []
    for index in range(count):
        entry = table[index * entry_size:(index + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        parts.append(Partition(index + 1, type_guid, uuid.UUID(bytes_le=entry[16:32]), first, last))
    return parts


def root_partition(parts: list[Partition]) -> Partition | None:
    """The Linux partition (the largest, if several), or None for a non-Linux disk."""
    linux = [p for p in parts if p.type_guid in LINUX_TYPES]
    return max(linux, key=lambda p: p.size) if linux else None


def find_tool(name: str, package: str) -> str:
    """A tool's path (sbin directories included, for ordinary users), or PlatformError."""
    search = os.environ.get("PATH", os.defpath).split(os.pathsep)
    path = shutil.which(name, path=os.pathsep.join(search + [d for d in _SBIN if d not in search]))
    if path is None:
        raise PlatformError(f"{name} is not installed; install it with: sudo apt-get install {package}")
    return path


def _debugfs() -> str:
    return find_tool("debugfs", "e2fsprogs")


async def _debugfs_cmd(disk: Path, part: Partition, request: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        _debugfs(), "-R", request, f"{disk}?offset={part.offset}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "LC_ALL": "C"},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise PlatformError(f"debugfs cannot read {disk.name}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def _version_key(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


async def boot_files(disk: Path, part: Partition) -> tuple[str, str | None] | None:
    """Names of the newest /boot/vmlinuz-* and its initrd.img-*, or None without a kernel."""
    listing = await _debugfs_cmd(disk, part, "ls -p /boot")
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    kernels = sorted((n for n in names if n.startswith("vmlinuz-")), key=_version_key)
    if not kernels:
        return None
    kernel = kernels[-1]
    initrd = "initrd.img-" + kernel.removeprefix("vmlinuz-")
    return kernel, initrd if initrd in names else None


async def _dump(disk: Path, part: Partition, name: str, dest: Path) -> None:
    await _debugfs_cmd(disk, part, f"dump /boot/{name} {dest}")
    if not dest.is_file() or dest.stat().st_size == 0:
        raise PlatformError(f"cannot extract /boot/{name} from {disk.name}")


async def extract_kernel(disk: Path, dest_dir: Path) -> KernelBoot | None:
    """Copy the kernel and initrd of a raw Linux disk to dest_dir, for direct kernel boot.

    None when the disk has no Linux partition or its /boot holds no kernel: the VM then
    boots through its firmware.
    """
    part = root_partition(read_gpt(disk))
    if part is None:
        return None
    try:
        found = await boot_files(disk, part)
    except PlatformError:
        return None  # not ext4 (debugfs cannot open it), or no /boot: firmware boot
    if found is None:
        return None
    kernel_name, initrd_name = found
    kernel = dest_dir / "vmlinuz"
    await _dump(disk, part, kernel_name, kernel)
    initrd = None
    if initrd_name is not None:
        initrd = dest_dir / "initrd.img"
        await _dump(disk, part, initrd_name, initrd)
    cmdline = f"root=PARTUUID={part.part_guid} rw console=ttyS0"
    return KernelBoot(kernel, initrd, cmdline)
