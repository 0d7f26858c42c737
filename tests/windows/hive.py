"""A minimal empty registry hive (regf), for test OS layers: libhivex-bin has no "create hive".

Layout: a 4 KiB base block, then one 4 KiB hbin holding the root key (nk), its security
descriptor (sk) and one free cell. hivexsh -w can then add keys and values.
"""

from __future__ import annotations

import struct
from pathlib import Path

_HBIN = 4096
_NONE = 0xFFFFFFFF
#: self-relative security descriptor: revision 1, control SE_SELF_RELATIVE, no owner/group/ACLs
_DESCRIPTOR = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)


def _cell(payload: bytes) -> bytes:
    size = (len(payload) + 4 + 7) & ~7
    return struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))


def empty_hive(root_name: str = "ROOT") -> bytes:
    nk_offset = 0x20  # cell offsets are relative to the first hbin
    name = root_name.encode("ascii")
    nk_len = 4 + 76 + len(name)
    sk_offset = nk_offset + ((nk_len + 7) & ~7)
    nk = struct.pack(
        "<2sHQ" + "I" * 15 + "HH", b"nk", 0x2C, 0, 0, _NONE, 0, 0, _NONE, _NONE, 0, _NONE,
        sk_offset, _NONE, 0, 0, 0, 0, 0, len(name), 0,
    ) + name
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_offset, sk_offset, 1, len(_DESCRIPTOR)) + _DESCRIPTOR
    cells = _cell(nk) + _cell(sk)
    free = _HBIN - 0x20 - len(cells)
    hbin = struct.pack("<4sIIQQI", b"hbin", 0, _HBIN, 0, 0, 0) + cells + struct.pack("<i", free)
    hbin += b"\0" * (_HBIN - len(hbin))
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, nk_offset, _HBIN, 1)
    checksum = 0
    for (dword,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= dword
    struct.pack_into("<I", base, 508, checksum)
    return bytes(base) + hbin


def write_empty_hive(path: Path, root_name: str = "ROOT") -> Path:
    path.write_bytes(empty_hive(root_name))
    return path
