"""The streaming streamOptimized VMDK writer, checked by qemu-img."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from compositor.sparse import data_extents
from compositor.stream_vmdk import (
    GRAIN,
    MARKER_EOS,
    MARKER_FOOTER,
    SECTOR,
    StreamVmdk,
    aiter_chunks,
    write_stream_vmdk,
)

from .conftest import make_raw_disk


def qemu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)


def _engines() -> list[str]:
    try:
        import isal  # noqa: F401
    except ImportError:
        return ["zlib"]
    return ["zlib", "isal"]


@pytest.mark.parametrize(("workers", "level"), [(1, 1), (4, 6)])
@pytest.mark.parametrize("engine", _engines())
def test_qemu_accepts_and_matches(tmp_path: Path, workers: int, level: int, engine: str) -> None:
    raw = make_raw_disk(tmp_path / "disk.img")
    vmdk = tmp_path / "disk.vmdk"
    stream = StreamVmdk(raw, workers=workers, level=level, engine=engine)  # type: ignore[arg-type]
    assert stream.engine == engine
    size = write_stream_vmdk(raw, vmdk, workers=workers, level=level, engine=engine)
    assert size == vmdk.stat().st_size and size % SECTOR == 0
    assert size < 8 * 2**20  # random 3 MiB + compressible text, holes skipped
    check = qemu("check", "-f", "vmdk", str(vmdk))
    assert check.returncode == 0, check.stdout + check.stderr
    compare = qemu("compare", "-f", "raw", "-F", "vmdk", str(raw), str(vmdk))
    assert compare.returncode == 0, compare.stdout + compare.stderr
    info = json.loads(qemu("info", "--output=json", "-f", "vmdk", str(vmdk)).stdout)
    assert info["virtual-size"] == raw.stat().st_size
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"


def test_header_footer_and_descriptor(tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.img")
    vmdk = tmp_path / "disk.vmdk"
    write_stream_vmdk(raw, vmdk)
    data = vmdk.read_bytes()
    magic, version, flags, capacity, grain, desc_off, desc_len = struct.unpack_from(
        "<4sIIQQQQ", data)
    assert (magic, version, flags, grain) == (b"KDMV", 3, 0x30003, 128)
    assert capacity * SECTOR == raw.stat().st_size
    assert struct.unpack_from("<H", data, 77)[0] == 1  # deflate
    assert struct.unpack_from("<Q", data, 56)[0] == 0xFFFFFFFFFFFFFFFF  # GD at end
    text = data[desc_off * SECTOR:(desc_off + desc_len) * SECTOR].rstrip(b"\0").decode()
    assert 'createType="streamOptimized"' in text and 'ddb.adapterType = "lsilogic"' in text
    footer_marker, footer, eos = data[-3 * SECTOR:-2 * SECTOR], data[-2 * SECTOR:-SECTOR], \
        data[-SECTOR:]
    assert struct.unpack_from("<QII", footer_marker) == (1, 0, MARKER_FOOTER)
    assert footer[:4] == b"KDMV" and struct.unpack_from("<Q", footer, 56)[0] < len(data)
    assert eos == bytes(SECTOR) and MARKER_EOS == 0


def test_holes_and_zero_grains_are_skipped(tmp_path: Path) -> None:
    raw = tmp_path / "sparse.img"
    with open(raw, "wb") as f:
        f.truncate(256 * 2**20)
        f.seek(100 * 2**20)
        f.write(bytes(4 * GRAIN))  # allocated but zero: no grain written
        f.write(b"x" * 10)
    fd = os.open(raw, os.O_RDONLY)
    try:
        extents = data_extents(fd, raw.stat().st_size)
    finally:
        os.close(fd)
    assert sum(end - start for start, end in extents) < 2 * 2**20
    stream = StreamVmdk(raw)
    out = b"".join(stream)
    assert len(out) < 80 * 1024  # header + one grain + one GT + GD + footer
    assert stream.fraction == 1.0
    vmdk = tmp_path / "sparse.vmdk"
    vmdk.write_bytes(out)
    assert qemu("compare", "-f", "raw", "-F", "vmdk", str(raw), str(vmdk)).returncode == 0


def test_odd_size_and_empty_disk(tmp_path: Path) -> None:
    raw = tmp_path / "odd.img"
    raw.write_bytes(os.urandom(3 * GRAIN + 512 * 3))
    vmdk = tmp_path / "odd.vmdk"
    write_stream_vmdk(raw, vmdk)
    assert qemu("check", "-f", "vmdk", str(vmdk)).returncode == 0
    assert qemu("compare", "-f", "raw", "-F", "vmdk", str(raw), str(vmdk)).returncode == 0
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        StreamVmdk(tmp_path / "empty.img")


async def test_async_iteration_and_early_close(tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.img")
    stream = StreamVmdk(raw, workers=2, batch_grains=4)
    chunks = iter(stream)
    seen = 0
    async with contextlib.aclosing(aiter_chunks(chunks)) as agen:
        async for chunk in agen:
            seen += len(chunk)
            if seen > 2 * 2**20:
                break
    assert 0 < stream.fraction < 1
    assert next(chunks, None) is None  # closed: the pool is shut down


async def test_cancel_while_compressing(tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.img")
    chunks = iter(StreamVmdk(raw, workers=2, batch_grains=1))

    async def consume() -> None:
        async with contextlib.aclosing(aiter_chunks(chunks)) as agen:
            async for _chunk in agen:
                await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert next(chunks, None) is None
