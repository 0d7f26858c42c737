"""Layer archives cannot exhaust the host: unpacking stops once the layers need more than the
template's disk holds (compositor.budget), and an archive whose header claims far more data
than follows fails at that member at once."""

from __future__ import annotations

import contextlib
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from isal import isal_zlib

from compositor import DiskTooSmallError, ImageSpec, LayerError, LayerSource, build_image
from compositor.budget import SpaceBudget, disk_capacity
from compositor.firstboot import publish_layer
from compositor.isolated import publish_layer_isolated
from compositor.tarlayer import check_archive, extract_tar_layer

from .layer_builder import TIB, claims_a_tebibyte, directory, file, write_tar

MIB, GIB = 1 << 20, 1 << 30
ZEROS = bytes(MIB)
#: the most a 1 GiB disk's layers may unpack to (the disk's size), and the figure shown
LIMIT = SpaceBudget.for_disk("ext4", 1).limit
CAPACITY_TEXT = "a 1 GiB disk holds at most 980 MiB of files; choose a disk of at least "


def _zeros_tar(members: list[tuple[str, int]]) -> Iterator[bytes]:
    """A tar stream of members full of zeros (sizes in whole MiB), made on the fly."""
    for name, size in members:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = size, 1_700_000_000
        yield info.tobuf(format=tarfile.GNU_FORMAT)
        for _ in range(size // MIB):
            yield ZEROS
    yield bytes(2 * tarfile.BLOCKSIZE)


def _bomb(path: Path, members: list[tuple[str, int]]) -> Path:
    """A few MB of gzip (ISA-L, level 1) or zstd (level 1) unpacking to GiBs of zeros."""
    if path.name.endswith(".gz"):
        compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: gzip framing
    else:
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
    with open(path, "wb") as fh:
        for chunk in _zeros_tar(members):
            fh.write(compressor.compress(chunk))
        fh.write(compressor.flush())
    assert path.stat().st_size < 16 * MIB
    return path


class PeakUsage:
    """Samples the bytes allocated below a folder every few ms (the work space's peak)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakUsage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._usage())

    def _usage(self) -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.folder):
            for name in filenames:
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total


def _os_layer(tmp_path: Path) -> LayerSource:
    return LayerSource("os", "os", write_tar(tmp_path / "os.tar", [
        directory("etc"), file("etc/os-release", b"ID=test\n")]))


async def _build_fails(
    tmp_path: Path, *layers: LayerSource, error: type[Exception] = DiskTooSmallError
) -> tuple[Any, float, int]:
    spec = ImageSpec(layers=(_os_layer(tmp_path), *layers), size_gib=1, format="raw")
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    with PeakUsage(work) as usage, pytest.raises(error) as info:
        await build_image(spec, work_dir=work, cache_dir=tmp_path / "cache")
    assert not list(work.iterdir())  # and nothing is left behind
    return info.value, time.monotonic() - started, usage.peak


@pytest.mark.timeout(120)
@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
async def test_a_bomb_stops_at_the_header_of_its_giant_member(tmp_path: Path, suffix: str) -> None:
    bomb = _bomb(tmp_path / f"bomb{suffix}", [("var/zeros.bin", 3 * GIB)])
    err, took, peak = await _build_fails(tmp_path, LayerSource("bomb", "app", bomb))
    assert str(err) == (f"layer 'bomb', member 'var/zeros.bin': the layers need more than "
                        f"{-(-err.needed_bytes // MIB)} MiB but {CAPACITY_TEXT}4 GiB")
    assert (err.layer, err.member) == ("bomb", "var/zeros.bin")
    assert err.needed_bytes > 3 * GIB  # what the header says; nothing of it was written
    assert peak < 16 * MIB, peak
    assert took < 30, took


@pytest.mark.timeout(180)
@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
async def test_layers_unpacked_together_stop_at_the_disk_size(tmp_path: Path, suffix: str) -> None:
    """No single header is too big: the running count of what both layers wrote is."""
    members = [(f"data/part{i}.bin", 96 * MIB) for i in range(7)]  # 672 MiB a layer
    first = _bomb(tmp_path / f"first{suffix}", members)
    second = _bomb(tmp_path / f"second{suffix}", members)
    err, took, peak = await _build_fails(
        tmp_path, LayerSource("first", "app", first), LayerSource("second", "app", second))
    assert err.layer in ("first", "second") and err.member is not None
    assert err.member.startswith("data/part")
    assert CAPACITY_TEXT in str(err)
    assert err.needed_bytes <= LIMIT + 96 * MIB + 4096
    assert peak <= LIMIT + 8 * MIB, peak  # never more than the disk's size in work space
    assert took < 60, took


def test_one_member_stops_chunk_by_chunk(tmp_path: Path) -> None:
    """A member whose header fits is still stopped while streaming, once what the other
    layers write meanwhile (here: as much again, charged as this one is written) fills the
    budget (a 64 MiB one, to keep the test small)."""
    bomb = _bomb(tmp_path / "bomb.tar.zst", [("var/zeros.bin", 48 * MIB)])
    budget = SpaceBudget(1, disk_capacity("ext4", 1), limit=64 * MIB)
    written: list[int] = []

    def another_layer_writes_as_much(n: int) -> None:
        written.append(n)
        budget.charge("other", None, n)

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DiskTooSmallError) as info:
        extract_tar_layer(LayerSource("bomb", "app", bomb), dest, threading.Event(),
                          another_layer_writes_as_much, budget)
    # stopped once both together reached the budget, long before the member's end
    assert 32 * MIB - 2 * MIB <= sum(written) <= 32 * MIB + MIB
    assert info.value.layer in ("bomb", "other")
    assert (dest / "var" / "zeros.bin").stat().st_size == sum(written)


# ------------------------------------------------------------------ a header claiming 1 TiB
@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_tebibyte_header_fails_guest_inspection_and_check_at_once(
    tmp_path: Path, suffix: str
) -> None:
    huge = claims_a_tebibyte(tmp_path / f"huge{suffix}")
    layer = LayerSource("huge", "os", huge)
    expected = (f"layer 'huge' ({huge}), member 'var/huge.img': the archive ends inside this "
                f"member (its header says {TIB} bytes)")
    started = time.monotonic()
    with pytest.raises(LayerError) as info:  # what a publish does first (ComposeStep)
        publish_layer([layer], "ext4", [], "auto")
    assert str(info.value) == expected
    with pytest.raises(LayerError) as info:  # `layerbot check`, for a layer no template uses
        check_archive("huge", huge)
    assert str(info.value) == expected
    # ... and for one a 1 GiB template uses: a stream's header alone is too big for it
    with pytest.raises(LayerError if suffix == ".tar" else DiskTooSmallError) as err:
        check_archive("huge", huge, SpaceBudget.for_disk("ext4", 1))
    assert err.value.member == "var/huge.img"
    assert time.monotonic() - started < 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
async def test_a_tebibyte_header_fails_the_build_at_once(tmp_path: Path, suffix: str) -> None:
    """A plain tar is seen to end inside the member (its size is known); a stream's header
    alone is more than the disk holds."""
    huge = claims_a_tebibyte(tmp_path / f"huge{suffix}")
    plain = suffix == ".tar"
    err, took, peak = await _build_fails(tmp_path, LayerSource("huge", "app", huge),
                                         error=LayerError if plain else DiskTooSmallError)
    assert (err.layer, err.member) == ("huge", "var/huge.img")
    if plain:
        assert "the archive ends inside this member" in str(err)
    else:
        assert CAPACITY_TEXT in str(err) and err.needed_bytes > TIB
    assert took < 10 and peak < MIB


@pytest.mark.timeout(60)
def test_extraction_names_the_member_a_stream_ends_in(tmp_path: Path) -> None:
    huge = claims_a_tebibyte(tmp_path / "huge.tar.gz")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(LayerError) as info:  # no budget: only the archive's end stops it
        extract_tar_layer(LayerSource("huge", "app", huge), dest, threading.Event())
    assert (info.value.layer, info.value.member) == ("huge", "var/huge.img")
    assert "the archive ends inside this member" in str(info.value)


@pytest.mark.timeout(60)
async def test_guest_inspection_stops_where_the_disk_is_full(tmp_path: Path) -> None:
    """What a publish does before compositing (in a child process) reads a layer's headers
    only as far as the template's disk holds, not the whole bomb."""
    bomb = _bomb(tmp_path / "bomb.tar.zst", [(f"data/part{i}.bin", 96 * MIB) for i in range(16)])
    layers = [_os_layer(tmp_path), LayerSource("bomb", "app", bomb)]
    publish_layer(layers, "ext4", [], "auto")  # no disk size: read through, nothing to object
    with pytest.raises(DiskTooSmallError) as direct:
        publish_layer(layers, "ext4", [], "auto", 1)
    with pytest.raises(DiskTooSmallError) as isolated:
        await publish_layer_isolated(layers, "ext4", [], "auto", 1)
    for err in (direct.value, isolated.value):
        # 11 x 96 MiB > 1 GiB: the 11th member's header is where it stops
        assert (err.layer, err.member) == ("bomb", "data/part10.bin")
        assert str(err).startswith("layer 'bomb', member 'data/part10.bin': the layers need "
                                   "more than 1057 MiB but a 1 GiB disk holds")
