"""Builds in RAM (compositor.scratch): the same bytes as a build on disk, a fallback to disk when
the layers turn out larger than the memory set aside, and a memory share that is respected."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import filecmp
import gzip
import os
import time
from pathlib import Path

import pytest
import zstandard

from compositor import HostSpaceError, ImageSpec, LayerSource, ToolFailedError, build, build_image, scratch
from compositor.sweep import RESERVE_PREFIX, host_name, owner_prefix

from .layer_builder import MTIME, directory, file, stat, write_tar
from .test_compositor_reproducible import _differing_bytes, _layers, _spec


@pytest.fixture
def ram(ram_scratch: Path | None) -> Path:
    if ram_scratch is None:
        pytest.skip("this machine has no writable tmpfs")
    return ram_scratch


def _staging_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The staging folders the ext4 builder was given."""
    seen: list[Path] = []
    real = build.FILESYSTEM_BUILDERS["ext4"]

    async def spy(staging: Path, *args: object) -> None:
        seen.append(staging)
        await real(staging, *args)

    monkeypatch.setitem(build.FILESYSTEM_BUILDERS, "ext4", spy)
    return seen


@pytest.mark.parametrize("fmt", ["qcow2", "gce-tar", "raw"])
async def test_a_build_in_ram_gives_the_bytes_of_a_build_on_disk(
        tmp_path: Path, ram: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Owners, modes, device nodes, symlinks, hard links, a directory layer and a spread big
    directory: the artifact is byte for byte the one the disk path makes."""
    spec = dataclasses.replace(_spec(_layers(tmp_path)), format=fmt)
    staged = _staging_spy(monkeypatch)
    on_disk = await build_image(spec, work_dir=tmp_path / "w1", cache_dir=tmp_path / "c1",
                                ram_scratch=False)
    in_ram = await build_image(spec, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c2")
    root = scratch.ram_root(ram)
    assert root is not None
    assert not staged[0].is_relative_to(root) and staged[1].is_relative_to(root)
    assert filecmp.cmp(on_disk.path, in_ram.path, shallow=False), \
        _differing_bytes(on_disk.path, in_ram.path)
    # the raw disk is kept in the cache only when it is the artifact or was built on disk
    assert len(list((tmp_path / "c1" / "raw").glob("*.img"))) == 1
    assert len(list((tmp_path / "c2" / "raw").glob("*.img"))) == (fmt == "raw")
    assert not list((tmp_path / "w2").iterdir())


def _multi_member_gzip(path: Path, tar_bytes: bytes, tail: int) -> Path:
    """A gzip file of two members, the last holding ``tail`` bytes: its trailer (what the
    scratch's estimate reads) gives only the last member's size."""
    with open(path, "wb") as fh:
        fh.write(gzip.compress(tar_bytes[:-tail], mtime=0))
        fh.write(gzip.compress(tar_bytes[-tail:], mtime=0))
    return path


async def test_layers_larger_than_their_estimate_are_built_again_on_disk(
        tmp_path: Path, ram: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = write_tar(tmp_path / "os.tar", [
        directory("var"), file("var/zeros.bin", bytes(40 << 20)), file("var/tail.bin", bytes(256 << 10)),
    ])
    layer = _multi_member_gzip(tmp_path / "os.tar.gz", plain.read_bytes(), 266 << 10)
    assert scratch.unpacked_bound([LayerSource("os", "os", layer)], 1 << 30) < 20 << 20
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    staged = _staging_spy(monkeypatch)
    notes: list[str] = []
    built = await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache",
                              progress=lambda note, _: notes.append(note))
    root = scratch.ram_root(ram)
    assert root is not None
    assert [s.is_relative_to(root) for s in staged] == [False]  # never got to mke2fs in RAM
    assert "the layers are larger than the memory set aside: building on disk" in notes
    reference = await build_image(spec, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c2",
                                  ram_scratch=False)
    assert filecmp.cmp(built.path, reference.path, shallow=False)
    raw = next((tmp_path / "cache" / "raw").glob("*.img"))
    size = stat(raw, "/var/zeros.bin")
    assert size is not None and size.mtime == MTIME and "Size: 41943040" in size.text
    assert sorted(os.listdir(root)) == [".lock"]


async def test_no_ram_is_used_past_its_share(tmp_path: Path, ram: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", bytes(1 << 20))])
    layers = [LayerSource("os", "os", layer)]
    need = 2 * scratch.unpacked_bound(layers, 1 << 30) + scratch._FS_SLACK
    root = scratch.ram_root(ram)
    assert root is not None
    # enough memory for one such build at RAM_SHARE, not for two
    monkeypatch.setattr(scratch, "_mem_available", lambda: int(need * 1.5 / scratch.RAM_SHARE))
    first = scratch.choose(tmp_path / "work", layers, 1 << 30, ram_dir=ram)
    try:
        assert first.in_ram and first.work.is_relative_to(root)
        assert scratch.reserved_by_live_builds(root, RESERVE_PREFIX) == need
        second = scratch.choose(tmp_path / "work", layers, 1 << 30, ram_dir=ram)
        assert not second.in_ram and second.work.parent == tmp_path / "work"
    finally:
        first.release()
    third = scratch.choose(tmp_path / "work", layers, 1 << 30, ram_dir=ram)
    assert third.in_ram  # the first one's share was given back
    third.release()
    for place in (first, second, third):
        place.work.rmdir()


def test_a_dead_builds_reservation_does_not_count(tmp_path: Path, ram: Path) -> None:
    root = scratch.ram_root(ram)
    assert root is not None
    (root / f"{RESERVE_PREFIX}{host_name()}-999999999-abcdefgh").write_text("5")
    (root / f"{owner_prefix(RESERVE_PREFIX)}abcdefgh").write_text("7")  # this process: alive
    assert scratch.reserved_by_live_builds(root, RESERVE_PREFIX) == 7
    for path in root.glob(RESERVE_PREFIX + "*"):
        path.unlink()


def test_only_a_writable_tmpfs_is_used(tmp_path: Path, ram: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert scratch.ram_root(tmp_path) is None  # tmp_path is not a tmpfs here
    assert scratch.ram_root(tmp_path / "missing") is None
    monkeypatch.setenv(scratch.ENV_VAR, "off")
    assert scratch.ram_root() is None
    place = scratch.choose(tmp_path / "work", [], 1 << 30)
    assert not place.in_ram
    place.work.rmdir()


def test_the_estimate_reads_sizes_from_the_layers_without_unpacking_them(tmp_path: Path) -> None:
    entries = [directory("etc"), file("etc/a", bytes(300_000))]
    plain = write_tar(tmp_path / "os.tar", entries)
    size = plain.stat().st_size
    gz = tmp_path / "os.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zst = tmp_path / "os.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))  # states its size
    unknown = tmp_path / "unknown.tar.zst"
    with open(unknown, "wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as writer:
        writer.write(plain.read_bytes())  # a stream: no size in its header
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "f").write_bytes(bytes(10_000))

    def bound(path: Path, cap: int = 1 << 30) -> int:
        return scratch.unpacked_bound([LayerSource("l", "app", path)], cap)

    assert bound(plain) == size + size // 4 + scratch.TAR_SLACK
    assert bound(gz) == bound(plain)
    assert bound(zst) == bound(plain)
    assert bound(unknown) == unknown.stat().st_size * scratch.UNKNOWN_RATIO
    assert bound(folder) == 3 * 4096 + 256  # the file's blocks and inode (the folder: the caller's)
    assert bound(plain, cap=1000) == 1000


@pytest.mark.parametrize("failure", ["enospc", "tool"])
async def test_a_full_ram_folder_that_no_error_names_sends_the_build_to_disk(
        tmp_path: Path, ram: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """A write that fills the tmpfs raises ENOSPC without a file name (os.write,
    copy_file_range), a tool says so on stderr: with the tmpfs full, both mean ScratchFull."""
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", b"a\n")])
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    real = build.FILESYSTEM_BUILDERS["ext4"]
    root = scratch.ram_root(ram)
    assert root is not None

    async def full_in_ram(staging: Path, *args: object) -> None:
        if staging.is_relative_to(root):
            if failure == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise ToolFailedError("wimlib-imagex", 1, "No space left on device")
        await real(staging, *args)

    monkeypatch.setitem(build.FILESYSTEM_BUILDERS, "ext4", full_in_ram)
    monkeypatch.setattr(build, "host_full", lambda folder: Path(folder).is_relative_to(root))
    notes: list[str] = []
    built = await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache",
                              progress=lambda note, _: notes.append(note))
    assert not built.cache_hit and built.path.is_file()
    assert "the layers are larger than the memory set aside: building on disk" in notes


async def test_enospc_on_disk_is_still_the_hosts_disk(tmp_path: Path, ram: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", b"a\n")])
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")

    async def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(build.FILESYSTEM_BUILDERS, "ext4", full)
    with pytest.raises(HostSpaceError, match="no space left on this machine's disk"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


def test_ntfs_reserves_three_copies_and_dead_builds_are_swept_first(tmp_path: Path, ram: Path) -> None:
    root = scratch.ram_root(ram)
    assert root is not None
    dead = f"{host_name()}-999999999-abcdefgh"
    (root / f"layerbot-build-{dead}").mkdir()
    (root / f"layerbot-build-{dead}" / "disk.img").write_bytes(b"x" * 4096)
    (root / f"{RESERVE_PREFIX}{dead}").write_text(str(1 << 40))
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", bytes(1 << 20))])
    layers = [LayerSource("os", "os", layer)]
    place = scratch.choose(tmp_path / "work", layers, 1 << 30, ram_dir=ram,
                           copies=scratch.NTFS_COPIES)
    try:
        assert place.in_ram  # the dead build's terabyte does not count, and is gone
        assert sorted(p.name for p in root.iterdir() if "999999999" in p.name) == []
        assert scratch.reserved_by_live_builds(root, RESERVE_PREFIX) == \
            3 * scratch.unpacked_bound(layers, 1 << 30) + scratch._FS_SLACK
    finally:
        place.release()
        place.work.rmdir()


def test_a_layer_that_cannot_be_read_sends_the_build_to_disk_without_a_reservation(
        tmp_path: Path, ram: Path) -> None:
    place = scratch.choose(tmp_path / "work", [LayerSource("os", "os", tmp_path / "gone.tar")],
                           1 << 30, ram_dir=ram)
    assert not place.in_ram and place.work.parent == tmp_path / "work"
    root = scratch.ram_root(ram)
    assert root is not None and scratch.reserved_by_live_builds(root, RESERVE_PREFIX) == 0
    place.work.rmdir()


async def test_a_build_cancelled_while_its_place_is_chosen_gives_it_back(
        tmp_path: Path, ram: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", b"a\n")])
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    real = scratch.choose
    chosen: list[scratch.Scratch] = []

    def slow_choose(*args: object, **kwargs: object) -> scratch.Scratch:
        time.sleep(0.5)
        place = real(*args, **kwargs)  # type: ignore[arg-type]
        chosen.append(place)
        return place

    monkeypatch.setattr(scratch, "choose", slow_choose)
    building = asyncio.ensure_future(build_image(spec, work_dir=tmp_path / "work",
                                                 cache_dir=tmp_path / "cache"))
    await asyncio.sleep(0.1)
    building.cancel()
    with pytest.raises(asyncio.CancelledError):
        await building
    assert len(chosen) == 1 and chosen[0].in_ram
    assert not chosen[0].work.exists()
    root = scratch.ram_root(ram)
    assert root is not None and sorted(os.listdir(root)) == [".lock"]
