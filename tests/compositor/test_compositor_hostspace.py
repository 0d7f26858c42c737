"""ENOSPC from the machine's own disk is not "the image is too small": the error says which
folder is full and how much is free, so the user frees space instead of growing the disk."""

from __future__ import annotations

import errno
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

import compositor.build as build_module
from compositor import (
    DiskTooSmallError,
    HostSpaceError,
    ImageSpec,
    LayerSource,
    build_image,
    disk,
    errors,
    tool_runner,
)
from compositor.errors import ToolFailedError
from compositor.identity import DiskIdentity

from .layer_builder import directory, file, write_tar

Usage = namedtuple("Usage", "total used free")
HOST_FULL = ("__populate_fs: No space left on device while writing file \"f1\"\n"
             "mke2fs: No space left on device while populating file system\n")
IMAGE_FULL = ("__populate_fs: Could not allocate block in ext2 filesystem while writing file "
              "\"f1\"\nmke2fs: Could not allocate block in ext2 filesystem while populating "
              "file system\n")


@pytest.mark.parametrize(("stderr", "free", "expected"), [
    (HOST_FULL, 5 << 20, HostSpaceError),
    (HOST_FULL, 50 << 30, DiskTooSmallError),  # ENOSPC with room on the host: the image
    (IMAGE_FULL, 5 << 20, DiskTooSmallError),
])
async def test_mke2fs_out_of_space_says_which_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, free: int,
        expected: type[Exception]) -> None:
    async def failing(*args: Any, **kwargs: Any) -> None:
        raise ToolFailedError("mke2fs", 1, stderr)

    monkeypatch.setattr(tool_runner, "run", failing)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda _: Usage(1 << 40, 0, free))
    raw = tmp_path / "raw.img"
    with pytest.raises(expected) as failed:
        await disk.make_ext4(raw, disk.layout_for(1), tmp_path, 10, 1 << 20, 1,
                             DiskIdentity("seed", 1))
    if expected is HostSpaceError:
        assert str(failed.value) == (
            f"no space left on this machine's disk while writing the ext4 disk image: "
            f"{tmp_path} has 5 MiB free; free some space there and publish again")


async def test_a_full_work_dir_while_extracting_is_a_host_space_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/os-release", b"ID=t\n")])

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "work" / "x"))

    monkeypatch.setattr(build_module, "extract_tar_layer", full)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    with pytest.raises(HostSpaceError, match=r"while compositing: .*/work has \d+ MiB free"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
