"""How a published disk boots under QEMU: the kernel and initrd of the ``/boot`` of its GPT
Linux partition (direct kernel boot, the only way: layerbot's disk has no boot loader).

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
#: Why a disk without a kernel is refused: layerbot's disk (GPT, one partition, no EFI system
#: partition, no boot code) has no boot loader, so QEMU's firmware would find nothing to boot.
CANNOT_BOOT = ("the qemu target boots Linux OS layers directly with the kernel in their /boot "
               "(layerbot's disk has no boot loader, so firmware boot cannot work)")
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
class BootFiles:
    """The kernel (and initrd) in /boot of a disk's Linux partition, found at publish."""

    partition: Partition
    kernel: str
    initrd: str | None

    @property
    def cmdline(self) -> str:
        return f"root=PARTUUID={self.partition.part_guid} rw console=ttyS0"


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


async def find_boot_files(disk: Path) -> BootFiles:
    """The newest /boot/vmlinuz-* of a raw Linux disk and its initrd.img-*, if any.

    Raises PlatformError saying why the disk cannot boot under QEMU: no Linux partition
    (a Windows/NTFS disk), an unreadable partition, or no kernel in /boot.
    """
    part = root_partition(read_gpt(disk))
    if part is None:
        raise PlatformError(
            f"{CANNOT_BOOT}; this disk has no Linux partition (a Windows OS layer on NTFS does "
            "not boot under QEMU): publish it to another target")
    listing = await _debugfs_cmd(disk, part, "ls -p /boot")
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    kernels = sorted((n for n in names if n.startswith("vmlinuz-")), key=_version_key)
    if not kernels:
        raise PlatformError(
            f"{CANNOT_BOOT}; the OS layer has no /boot/vmlinuz-*: install a kernel in the OS "
            "layer (on Debian: linux-image-cloud-amd64 and initramfs-tools) or publish it to "
            "another target")
    kernel = kernels[-1]
    initrd = "initrd.img-" + kernel.removeprefix("vmlinuz-")
    return BootFiles(part, kernel, initrd if initrd in names else None)


async def _dump(disk: Path, part: Partition, name: str, dest: Path) -> None:
    await _debugfs_cmd(disk, part, f"dump /boot/{name} {dest}")
    if not dest.is_file() or dest.stat().st_size == 0:
        raise PlatformError(f"cannot extract /boot/{name} from {disk.name}")


async def extract_kernel(disk: Path, found: BootFiles, dest_dir: Path) -> KernelBoot:
    """Copy the kernel and initrd :func:`find_boot_files` found to dest_dir."""
    kernel = dest_dir / "vmlinuz"
    await _dump(disk, found.partition, found.kernel, kernel)
    initrd = None
    if found.initrd is not None:
        initrd = dest_dir / "initrd.img"
        await _dump(disk, found.partition, found.initrd, initrd)
    return KernelBoot(kernel, initrd, found.cmdline)
