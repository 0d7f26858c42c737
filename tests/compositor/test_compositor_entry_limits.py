"""Many empty members cannot exhaust the host: entries (each an inode here and some memory)
stop at what the disk's filesystem has inodes for, and before the work folder's free inodes
run out. (An empty entry costs only 256 bytes of the byte budget: 4 million fit 1 GiB.)"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource, build_image
from compositor.budget import HOST_SPARE_INODES, SpaceBudget, disk_capacity, disk_entries
from compositor.errors import HostInodesError, TooManyEntriesError
from compositor.tarlayer import check_archive, extract_tar_layer

from .layer_builder import directory, file, many_empty_files, write_tar


def _count_files(folder: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(folder))


def test_a_disk_holds_one_entry_per_block() -> None:
    assert disk_entries(1) == 261_632  # 1 GiB less the GPT and alignment, in 4 KiB blocks
    assert SpaceBudget.for_disk("ext4", 1).max_entries == disk_entries(1)
    assert SpaceBudget.for_disk("ntfs", 4).max_entries == disk_entries(4)


def test_extraction_and_check_stop_past_the_disks_entries(tmp_path: Path) -> None:
    many = many_empty_files(tmp_path / "many.tar.gz", 5000)
    message = ("the layers have more than 1000 entries (files, directories, links) but a 1 GiB "
               "disk holds at most 1000 files; choose a bigger disk")
    with pytest.raises(TooManyEntriesError) as info:
        check_archive("many", many, SpaceBudget(1, disk_capacity("ext4", 1), max_entries=1000))
    assert str(info.value) == f"layer 'many', member 'd1/f0001000': {message}"
    dest = tmp_path / "dest"
    dest.mkdir()
    budget = SpaceBudget(1, disk_capacity("ext4", 1), max_entries=1000)
    with pytest.raises(TooManyEntriesError) as info:
        extract_tar_layer(LayerSource("many", "app", many), dest, threading.Event(), None, budget)
    assert info.value.layer == "many" and message in str(info.value)
    assert _count_files(dest) <= 1000  # stopped before making the 1,001st


async def test_a_publish_stops_at_the_disks_entries_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("compositor.budget.disk_entries", lambda size_gib: 2000)
    os_layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/os-release", b"ID=x\n")])
    many = many_empty_files(tmp_path / "many.tar.gz", 5000)
    spec = ImageSpec(layers=(LayerSource("os", "os", os_layer), LayerSource("many", "app", many)),
                     size_gib=1, format="raw")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(TooManyEntriesError) as info:
        await build_image(spec, work_dir=work, cache_dir=tmp_path / "cache")
    assert info.value.layer == "many"
    assert "a 1 GiB disk holds at most 2000 files" in str(info.value)
    assert not list(work.iterdir())


def test_extraction_stops_before_the_hosts_free_inodes_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs(tmp_path)
    fake = os.statvfs_result((*real[:5], 1_000_000, HOST_SPARE_INODES + 500,
                              HOST_SPARE_INODES + 500, *real[8:]))
    monkeypatch.setattr("compositor.budget.os.statvfs", lambda path: fake)
    many = many_empty_files(tmp_path / "many.tar.gz", 5000)
    dest = tmp_path / "dest"
    dest.mkdir()
    budget = SpaceBudget.for_disk("ext4", 1)
    budget.watch_host(tmp_path)
    with pytest.raises(HostInodesError) as info:
        extract_tar_layer(LayerSource("many", "app", many), dest, threading.Event(), None, budget)
    assert str(info.value) == (
        f"no free inodes left on this machine's disk while unpacking layer 'many': {tmp_path} had "
        f"{HOST_SPARE_INODES + 500} free inodes (files) and the layers need more; free some there "
        f"(or give the work folder a filesystem with more inodes) and publish again")
    assert _count_files(dest) <= 500
