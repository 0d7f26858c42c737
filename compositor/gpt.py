"""Write a GUID partition table (protective MBR, primary and backup GPT) with one partition.

Written directly rather than with sgdisk: sgdisk calls sync(), which would flush every dirty
page on the machine (gigabytes of extracted layers that are about to be deleted anyway).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from pathlib import Path

SECTOR = 512
_ENTRIES = 128
_ENTRY_SIZE = 128
_ENTRY_SECTORS = _ENTRIES * _ENTRY_SIZE // SECTOR  # 32
LINUX_FILESYSTEM = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
_NAMESPACE = uuid.UUID("5d5c1c4e-6c0b-4f57-9d39-3f0f7d2a9b10")


def write_gpt(
    disk: Path, *, total_sectors: int, first: int, last: int, name: str, seed: str,
    type_guid: uuid.UUID = LINUX_FILESYSTEM,
) -> None:
    """Partition table for a disk of total_sectors with one partition first..last (inclusive).

    GUIDs derive from seed, so the same content gives byte-identical disks."""
    disk_guid = uuid.uuid5(_NAMESPACE, f"disk:{seed}")
    part_guid = uuid.uuid5(_NAMESPACE, f"part:{seed}")
    entry = struct.pack(
        "<16s16sQQQ72s", type_guid.bytes_le, part_guid.bytes_le, first, last, 0,
        name.encode("utf-16-le")[:72],
    )
    entries = entry + bytes(_ENTRY_SIZE * (_ENTRIES - 1))
    entries_crc = zlib.crc32(entries)
    last_lba = total_sectors - 1
    first_usable = 2 + _ENTRY_SECTORS
    last_usable = total_sectors - 2 - _ENTRY_SECTORS
    if not first_usable <= first <= last <= last_usable:
        raise ValueError(f"partition {first}..{last} outside {first_usable}..{last_usable}")

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = [b"EFI PART", 0x00010000, 92, 0, 0, current, backup, first_usable,
                  last_usable, disk_guid.bytes_le, entries_lba, _ENTRIES, _ENTRY_SIZE,
                  entries_crc]
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        fields[3] = zlib.crc32(raw)
        return struct.pack("<8sIIIIQQQQ16sQIII", *fields).ljust(SECTOR, b"\0")

    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack(
        "<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1,
        min(total_sectors - 1, 0xFFFFFFFF),
    )
    mbr[510:512] = b"\x55\xaa"
    fd = os.open(disk, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, bytes(mbr) + header(1, last_lba, 2) + entries, 0)
        backup_entries = last_lba - _ENTRY_SECTORS
        os.pwrite(fd, entries + header(last_lba, 1, backup_entries), backup_entries * SECTOR)
    finally:
        os.close(fd)
