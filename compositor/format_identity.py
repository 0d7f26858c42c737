"""Replace the random and clock values qemu-img writes into VMDK, VHD and VHDX files.

``qemu-img convert`` gives each new file a random VMDK CID, VHD unique id and VHDX GUIDs, the
clock's VHD time stamp, and names the output file in the VMDK descriptor. Right after the
conversion these are rewritten with values derived from the raw disk's cache key (and checksums
recomputed), so one key always gives the same bytes. Offsets are in the docstring of each
function, with the specification they come from.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from .errors import CompositorError
from .identity import CONVERTED_TIME, KeyIdentity

SECTOR = 512
VMDK_EXTENT_NAME = "disk.vmdk"
_VHD_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z
_CID = re.compile(rb"^CID=[0-9a-fA-F]+$", re.MULTILINE)
_EXTENT = re.compile(rb'^(RW \d+ SPARSE )"[^"\n]*"$', re.MULTILINE)

# MS-VHDX 2.2.3.2 and 2.6.2: known region and metadata item GUIDs
_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
_VHDX_HEADERS = (64 << 10, 128 << 10)
_VHDX_HEADER_SIZE = 4 << 10
_VHDX_REGION_TABLE = 192 << 10
_VHDX_REGION_TABLE_SIZE = 64 << 10


def pin_identity(fmt: str, path: Path, ids: KeyIdentity) -> None:
    """Rewrite the values qemu-img chose at random (or from the clock) in ``path``."""
    pin = {"vmdk": pin_vmdk, "vhd": pin_vhd, "vhd-dynamic": pin_vhd_dynamic, "vhdx": pin_vhdx}.get(fmt)
    if pin is not None:
        pin(path, ids)


def _fail(fmt: str, path: Path, offset: int, what: str) -> CompositorError:
    return CompositorError(f"{fmt}: {path.name}: {what} at byte {offset}; "
                           "the file is not as qemu-img writes it")


def pin_vmdk(path: Path, ids: KeyIdentity) -> None:
    """VMware "Virtual Disk Format 5.0", hosted sparse extent header: descriptorOffset at byte
    28 and descriptorSize at byte 36 (both uint64 LE, in sectors). The embedded descriptor holds
    the content id (``CID=``, random in qemu) and the extent's file name (the temporary output
    name); it has no checksum. The CID becomes 8 hex digits from the key, the name disk.vmdk."""
    with open(path, "r+b") as fh:
        header = fh.read(SECTOR)
        if header[:4] != b"KDMV":
            raise _fail("vmdk", path, 0, f"magic {header[:4]!r}, not b'KDMV'")
        offset, sectors = struct.unpack_from("<QQ", header, 28)
        fh.seek(offset * SECTOR)
        area = fh.read(sectors * SECTOR)
        text = area.split(b"\0", 1)[0]
        # 0xffffffff means "no parent" in parentCID; never use it as a CID
        cid = int(ids.token("vmdk cid", 8), 16) % 0xFFFF_FFFF
        text, cids = _CID.subn(f"CID={cid:08x}".encode(), text)
        text, extents = _EXTENT.subn(rb'\1"' + VMDK_EXTENT_NAME.encode() + b'"', text)
        if cids != 1 or extents != 1:
            raise _fail("vmdk", path, offset * SECTOR,
                        f"descriptor with {cids} CID and {extents} sparse extent lines, not one each")
        if len(text) > len(area):
            raise _fail("vmdk", path, offset * SECTOR, "descriptor too long for its area")
        fh.seek(offset * SECTOR)
        fh.write(text.ljust(len(area), b"\0"))


def pin_vhd(path: Path, ids: KeyIdentity) -> None:
    """Microsoft "Virtual Hard Disk Image Format Specification" 1.0, Hard Disk Footer (the last
    512 bytes; a fixed disk has no other metadata): cookie "conectix" at 0, Time Stamp at 24
    (uint32 BE, seconds since 2000-01-01 UTC), Checksum at 64 (uint32 BE, one's complement of
    the sum of the footer's bytes with the checksum taken as zero), Unique Id at 68 (16 bytes)."""
    with open(path, "r+b") as fh:
        end = fh.seek(0, os.SEEK_END) - SECTOR
        if end < 0:
            raise _fail("vhd", path, 0, "no footer: the file is shorter than 512 bytes")
        _pin_vhd_footer(fh, path, "vhd", end, ids)


def pin_vhd_dynamic(path: Path, ids: KeyIdentity) -> None:
    """A dynamic VHD (same specification) starts with a copy of the footer and has its dynamic
    disk header ("cxsparse") at byte 512; the header holds no random or clock value (no parent),
    so both footers are pinned as :func:`pin_vhd` pins the fixed disk's one."""
    with open(path, "r+b") as fh:
        end = fh.seek(0, os.SEEK_END) - SECTOR
        if end < 2 * SECTOR:
            raise _fail("vhd-dynamic", path, 0, "the file is too short for a footer copy, a "
                                                "dynamic header and a footer")
        if (cookie := _read(fh, SECTOR, 8)) != b"cxsparse":
            raise _fail("vhd-dynamic", path, SECTOR, f"dynamic header cookie {cookie!r}, not b'cxsparse'")
        for at in (0, end):
            _pin_vhd_footer(fh, path, "vhd-dynamic", at, ids)


def _pin_vhd_footer(fh: BinaryIO, path: Path, fmt: str, at: int, ids: KeyIdentity) -> None:
    fh.seek(at)
    footer = bytearray(fh.read(SECTOR))
    if footer[:8] != b"conectix":
        raise _fail(fmt, path, at, f"footer cookie {bytes(footer[:8])!r}, not b'conectix'")
    if _vhd_checksum(footer) != struct.unpack_from(">I", footer, 64)[0]:
        raise _fail(fmt, path, at + 64, "wrong footer checksum")
    struct.pack_into(">I", footer, 24, CONVERTED_TIME - _VHD_EPOCH)
    footer[68:84] = ids.uuid("vhd unique id").bytes
    struct.pack_into(">I", footer, 64, _vhd_checksum(footer))
    fh.seek(at)
    fh.write(footer)


def _vhd_checksum(footer: bytes | bytearray) -> int:
    return ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFF_FFFF


def pin_vhdx(path: Path, ids: KeyIdentity) -> None:
    """[MS-VHDX] (Virtual Hard Disk v2 File Format), all little endian, GUIDs in Microsoft's
    mixed-endian form (``uuid.bytes_le``):

    - 2.2.2 headers at 64 KiB and 128 KiB, 4 KiB each: "head" at 0, CRC-32C at 4 (over the 4 KiB
      with the field zero), SequenceNumber at 8 (uint64; the greater marks the current header,
      qemu starts from a random 32-bit number), FileWriteGuid at 16, DataWriteGuid at 32,
      LogGuid at 48, LogLength at 68 (uint32), LogOffset at 72 (uint64). Both write GUIDs are
      rewritten in both headers; the sequence numbers start from a number from the key and keep
      their order and distance.
    - 2.3 the log: LogGuid zero means it is empty and MUST NOT be replayed, but qemu leaves the
      entries of its BAT updates there, each with the random LogGuid of its session. A log with
      nothing to replay is zeroed; one with a nonzero LogGuid is refused.
    - 2.2.3 region table at 192 KiB (64 KiB, "regi", CRC-32C at 4, EntryCount at 8, 32-byte
      entries from 16: GUID, FileOffset uint64, Length uint32) locates the metadata region.
    - 2.6.1 metadata table at its start: "metadata", EntryCount (uint16) at 10, 32-byte entries
      from 32: ItemId GUID, Offset uint32 (from the region's start), Length uint32. The Virtual
      Disk ID item (2.6.2.3, qemu's page 83 data) gets a GUID from the key; no checksum.
    """
    with open(path, "r+b") as fh:
        if (signature := _read(fh, 0, 8)) != b"vhdxfile":
            raise _fail("vhdx", path, 0, f"signature {signature!r}, not b'vhdxfile'")
        headers = [bytearray(_read(fh, at, _VHDX_HEADER_SIZE)) for at in _VHDX_HEADERS]
        for at, header in zip(_VHDX_HEADERS, headers, strict=True):
            _check_crc32c(path, at, header, b"head")
            if any(header[48:64]):
                raise _fail("vhdx", path, at + 48, "nonzero LogGuid (a log left to replay)")
        sequences = [struct.unpack_from("<Q", header, 8)[0] for header in headers]
        first = int(ids.token("vhdx sequence number", 8), 16)
        logs: set[tuple[int, int]] = set()
        for at, header, sequence in zip(_VHDX_HEADERS, headers, sequences, strict=True):
            struct.pack_into("<Q", header, 8, first + sequence - min(sequences))
            header[16:32] = ids.uuid("vhdx file write guid").bytes_le
            header[32:48] = ids.uuid("vhdx data write guid").bytes_le
            struct.pack_into("<I", header, 4, 0)
            struct.pack_into("<I", header, 4, google_crc32c.value(bytes(header)))
            _write(fh, at, header)
            length, offset = struct.unpack_from("<IQ", header, 68)
            logs.add((offset, length))
        for offset, length in logs:
            _write(fh, offset, bytes(length))
        item = _vhdx_metadata_item(fh, path, _VIRTUAL_DISK_ID)
        _write(fh, item, ids.uuid("vhdx virtual disk id").bytes_le)


def _vhdx_metadata_item(fh: BinaryIO, path: Path, item_id: uuid.UUID) -> int:
    """The file offset of a 16-byte metadata item."""
    table = _read(fh, _VHDX_REGION_TABLE, _VHDX_REGION_TABLE_SIZE)
    _check_crc32c(path, _VHDX_REGION_TABLE, table, b"regi")
    (count,) = struct.unpack_from("<I", table, 8)
    regions = {table[at:at + 16]: struct.unpack_from("<Q", table, at + 16)[0]
               for at in range(16, 16 + 32 * min(count, 2047), 32)}
    region = regions.get(_METADATA_REGION.bytes_le)
    if region is None:
        raise _fail("vhdx", path, _VHDX_REGION_TABLE, "no metadata region in the region table")
    metadata = _read(fh, region, 64 << 10)
    if metadata[:8] != b"metadata":
        raise _fail("vhdx", path, region, f"metadata table signature {metadata[:8]!r}")
    (count,) = struct.unpack_from("<H", metadata, 10)
    for at in range(32, 32 + 32 * min(count, 2047), 32):
        if metadata[at:at + 16] == item_id.bytes_le:
            offset, length = struct.unpack_from("<II", metadata, at + 16)
            if length != 16:
                raise _fail("vhdx", path, region + at + 20, f"item {item_id} of {length} bytes, not 16")
            return region + offset
    raise _fail("vhdx", path, region, f"no metadata item {item_id}")


def _check_crc32c(path: Path, at: int, data: bytes | bytearray, signature: bytes) -> None:
    if data[:4] != signature:
        raise _fail("vhdx", path, at, f"signature {bytes(data[:4])!r}, not {signature!r}")
    (stored,) = struct.unpack_from("<I", data, 4)
    if google_crc32c.value(bytes(data[:4]) + bytes(4) + bytes(data[8:])) != stored:
        raise _fail("vhdx", path, at + 4, "wrong CRC-32C checksum")


def _read(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise CompositorError(f"vhdx: {Path(fh.name).name}: the file ends before byte {offset + size}")
    return data


def _write(fh: BinaryIO, offset: int, data: bytes | bytearray) -> None:
    fh.seek(offset)
    fh.write(data)
