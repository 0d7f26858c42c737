"""compositor.sparse.data_extents: the one SEEK_DATA/SEEK_HOLE walk, and the copies using it."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from compositor import ntfs, stream_vmdk
from compositor.sparse import data_extents

MIB = 1 << 20


def _sparse_file(path: Path) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(16 * MIB)
        fh.seek(1 * MIB)
        fh.write(b"a" * 4096)
        fh.seek(9 * MIB)
        fh.write(b"b" * 8192)
    return path


def _covered(extents: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in extents)


def test_data_extents_skips_holes(tmp_path: Path) -> None:
    path = _sparse_file(tmp_path / "disk.img")
    with open(path, "rb") as fh:
        extents = data_extents(fh.fileno(), 16 * MIB)
        assert extents == sorted(extents)
        assert all(0 <= s < e <= 16 * MIB for s, e in extents)
        assert _covered(extents, MIB, MIB + 4096)
        assert _covered(extents, 9 * MIB, 9 * MIB + 8192)
        if len(extents) > 1:  # a filesystem that reports holes
            assert sum(e - s for s, e in extents) < 4 * MIB
        # a shorter size clips the last extent and drops the ones after it
        assert data_extents(fh.fileno(), MIB + 100)[-1][1] == MIB + 100
        assert all(e <= 2 * MIB for _, e in data_extents(fh.fileno(), 2 * MIB))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with open(empty, "rb") as fh:
        assert data_extents(fh.fileno(), 0) == []


def test_data_extents_falls_back_to_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sparse_file(tmp_path / "disk.img")

    def no_seek_data(fd: int, pos: int, how: int) -> int:
        raise OSError(errno.EINVAL, "SEEK_DATA not supported")

    with open(path, "rb") as fh:
        monkeypatch.setattr(os, "lseek", no_seek_data)
        assert data_extents(fh.fileno(), 16 * MIB) == [(0, 16 * MIB)]


def test_the_compositor_copies_use_the_shared_helper() -> None:
    assert stream_vmdk.data_extents is data_extents
    assert ntfs.data_extents is data_extents


@pytest.mark.parametrize("probe", ["works", "unsupported"])
def test_copy_sparse_copies_every_data_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: str
) -> None:
    """Before the shared helper, a filesystem without SEEK_DATA made the NTFS copy stop
    silently and leave the volume out of the disk."""
    src = _sparse_file(tmp_path / "volume.img")
    dest = tmp_path / "disk.img"
    with open(dest, "wb") as fh:
        fh.truncate(18 * MIB)
    if probe == "unsupported":
        real = os.lseek

        def lseek(fd: int, pos: int, how: int) -> int:
            if how in (os.SEEK_DATA, os.SEEK_HOLE):
                raise OSError(errno.EINVAL, "not supported")
            return real(fd, pos, how)

        monkeypatch.setattr(os, "lseek", lseek)
    ntfs.copy_sparse(src, dest, MIB, threading.Event())
    monkeypatch.undo()
    data = dest.read_bytes()
    assert data[:MIB] == bytes(MIB)
    assert data[MIB:17 * MIB] == src.read_bytes()
    assert data[17 * MIB:] == bytes(MIB)
