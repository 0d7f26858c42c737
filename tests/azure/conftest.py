"""A counting proxy per test, and fixed VHDs made by the
compositor's own conversion."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from compositor.convert import convert
from compositor.identity import KeyIdentity

from .azurite import Azurite, page_blob_sas
from .storage_proxy import StorageProxy

MIB = 1 << 20
_names = itertools.count()


@pytest.fixture
def page_blob(azurite: Azurite) -> Callable[..., str]:
    """``page_blob(size, **sas_options)``: a new empty page blob's SAS URL."""
    def make(size: int, **options: object) -> str:
        return page_blob_sas(azurite, "disks", f"disk{next(_names)}.vhd", size,
                             **options)  # type: ignore[arg-type]
    return make


@pytest.fixture
async def proxy(azurite: Azurite) -> AsyncIterator[StorageProxy]:
    peer = StorageProxy(azurite.endpoint)
    await peer.start()
    yield peer
    await peer.stop()


def write_raw(path: Path, size: int, regions: dict[int, bytes]) -> Path:
    """A sparse raw disk of ``size`` bytes holding ``regions`` (offset -> bytes)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in regions.items():
            f.seek(offset)
            f.write(data)
    return path


def to_vhd(raw: Path) -> Path:
    """The fixed VHD the compositor makes of ``raw`` for Azure."""
    out = raw.with_suffix(".vhd")
    asyncio.run(convert(raw, "vhd", out, lambda _: None, KeyIdentity(seed=raw.name)))
    return out


def nonzero_pages(path: Path) -> list[tuple[int, int]]:
    """Non-zero 512-byte page ranges of a file, by reading every page (the slow, obvious way)."""
    ranges: list[tuple[int, int]] = []
    data = path.read_bytes()
    for offset in range(0, len(data), 512):
        if any(data[offset:offset + 512]):
            if ranges and ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], offset + 512)
            else:
                ranges.append((offset, offset + 512))
    return ranges


#: a disk as the compositor leaves them: a partition table, files, gaps, a long run, and pages of
#: zeros inside the data (which the file system and qemu-img keep as data, in 4 KiB blocks)
def sample_regions() -> dict[int, bytes]:
    alternating = (bytes(512) + os.urandom(512)) * 64
    return {0: os.urandom(4096), 3 * MIB: os.urandom(10 * MIB), 20 * MIB: alternating,
            40 * MIB + 100: b"x" * 1000}


@pytest.fixture(scope="session")
def sample_vhd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = write_raw(tmp_path_factory.mktemp("vhd") / "sample.raw", 48 * MIB, sample_regions())
    return to_vhd(raw)
