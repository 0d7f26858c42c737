"""Each output format's header, checked byte by byte, and the GPT layout of the disk."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource, build_image
from compositor import convert as convert_module
from compositor.errors import CompositorError
from compositor.format_identity import pin_identity
from compositor.identity import KeyIdentity

from .layer_builder import cat, directory, file, write_tar

GIB = 1 << 30


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("formats")
    return write_tar(folder / "os.tar", [directory("etc"), file("etc/os-release", b"ID=test\n")])


async def _build(layer: Path, fmt: str, tmp_path: Path) -> Path:
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format=fmt)  # type: ignore[arg-type]
    built = await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    assert built.virtual_size == GIB
    assert built.file_size == built.path.stat().st_size
    return built.path


async def test_raw_has_gpt_partition_at_1mib(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "raw", tmp_path)
    assert path.stat().st_size == GIB
    assert path.stat().st_blocks * 512 < 64 << 20  # sparse
    out = subprocess.run(["sgdisk", "-i", "1", str(path)], capture_output=True, text=True)
    assert "First sector: 2048 " in out.stdout
    verify = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
    assert "No problems found" in verify.stdout
    with open(path, "rb") as fh:
        fh.seek(512)
        assert fh.read(8) == b"EFI PART"
    assert cat(path, "/etc/os-release") == b"ID=test\n"


async def test_qcow2(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "qcow2", tmp_path)
    header = path.read_bytes()[:32]
    assert header[:4] == b"QFI\xfb"
    assert struct.unpack(">I", header[4:8])[0] == 3
    assert struct.unpack(">Q", header[24:32])[0] == GIB


async def test_vmdk_stream_optimized_v3(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "vmdk", tmp_path)
    data = path.read_bytes()
    assert data[:4] == b"KDMV"
    version, flags = struct.unpack("<II", data[4:12])
    assert version == 3 and flags & 0x30000 == 0x30000  # compressed grains, markers
    assert data[77] == 1  # deflate
    assert b'createType="streamOptimized"' in data[:4096]
    assert b'ddb.adapterType = "lsilogic"' in data[:4096]


async def test_vhd_fixed_with_whole_mib(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "vhd", tmp_path)
    size = path.stat().st_size
    assert (size - 512) % (1 << 20) == 0
    with open(path, "rb") as fh:
        fh.seek(size - 512)
        footer = fh.read(512)
    assert footer[:8] == b"conectix"
    assert footer[28:32] == b"qem2"  # force_size: no CHS rounding
    assert struct.unpack(">Q", footer[48:56])[0] == GIB
    assert struct.unpack(">I", footer[60:64])[0] == 2  # fixed
    checksum = struct.unpack(">I", footer[64:68])[0]
    assert checksum == ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF


async def test_vhd_dynamic_has_header_and_both_footers(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "vhd-dynamic", tmp_path)
    data = path.read_bytes()
    assert len(data) < GIB // 2  # only allocated blocks are stored
    footer = data[-512:]
    assert data[:512] == footer and footer[:8] == b"conectix"
    assert data[512:520] == b"cxsparse"
    assert footer[28:32] == b"qem2"  # force_size: no CHS rounding
    assert struct.unpack(">Q", footer[48:56])[0] == GIB
    assert struct.unpack(">I", footer[60:64])[0] == 3  # dynamic
    checksum = struct.unpack(">I", footer[64:68])[0]
    assert checksum == ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF


async def test_vhdx_signature(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "vhdx", tmp_path)
    assert path.read_bytes()[:8] == b"vhdxfile"


async def test_gce_tar(layer: Path, tmp_path: Path) -> None:
    path = await _build(layer, "gce-tar", tmp_path)
    assert path.name.endswith(".tar.gz")
    with gzip.open(path, "rb") as fh:
        header = fh.read(512)
    assert header[:9] == b"disk.raw\0"
    assert header[257:265] == b"ustar  \0"  # oldgnu
    assert header[156:157] == b"S"  # GNU sparse member
    real_size = int(header[483:495].rstrip(b"\0 ") or b"0", 8)
    assert real_size % GIB == 0 and real_size == GIB


@pytest.mark.parametrize("fmt,qemu_fmt", [("raw", "raw"), ("qcow2", "qcow2"), ("vmdk", "vmdk"),
                                          ("vhd", "vpc"), ("vhd-dynamic", "vpc"), ("vhdx", "vhdx")])
async def test_every_format_is_read_back_with_qemu_img_info(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, qemu_fmt: str) -> None:
    raw = tmp_path / "composited.img"
    with open(raw, "wb") as fh:
        fh.truncate(4 << 20)
    calls: list[list[str]] = []
    real_run = convert_module.tool_runner.run

    async def spy(argv, **kwargs):  # type: ignore[no-untyped-def]
        calls.append([str(a) for a in argv])
        return await real_run(argv, **kwargs)

    monkeypatch.setattr(convert_module.tool_runner, "run", spy)
    out = tmp_path / f"disk.{fmt}"
    assert await convert_module.convert(raw, fmt, out, lambda _: None, KeyIdentity("k")) == 4 << 20
    info = [c for c in calls if c[1:2] == ["info"]]
    assert len(info) == 1 and info[0][2:] == ["--output=json", "-f", qemu_fmt, str(out)]


@pytest.mark.parametrize("fmt,qemu_args,offset,message", [
    ("vmdk", ["vmdk", "-o", "subformat=streamOptimized"], 0,
     r"vmdk: disk\.vmdk: magic b'\\xb4DMV', not b'KDMV' at byte 0;"),
    ("vhd", ["vpc", "-o", "subformat=fixed"], -512 + 70, r"vhd: disk\.vhd: wrong footer checksum at byte "),
    ("vhd-dynamic", ["vpc", "-o", "subformat=dynamic"], 70,
     r"vhd-dynamic: disk\.vhd-dynamic: wrong footer checksum at byte 64;"),
    ("vhdx", ["vhdx"], (128 << 10) + 100, r"vhdx: disk\.vhdx: wrong CRC-32C checksum at byte 131076;"),
])
def test_a_converted_file_not_as_qemu_img_writes_it_is_refused_with_where(
        tmp_path: Path, fmt: str, qemu_args: list[str], offset: int, message: str) -> None:
    raw = tmp_path / "composited.img"
    with open(raw, "wb") as fh:
        fh.truncate(4 << 20)
    out = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", *qemu_args, str(raw), str(out)], check=True)
    with open(out, "r+b") as fh:
        fh.seek(offset, 0 if offset >= 0 else 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CompositorError, match=message):
        pin_identity(fmt, out, KeyIdentity("k"))
