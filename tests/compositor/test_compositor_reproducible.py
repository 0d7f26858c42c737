"""The same layers and settings give the same disk: two builds into two caches, byte for byte."""

from __future__ import annotations

import dataclasses
import filecmp
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource, build_image, stage
from compositor.identity import CONVERTED_TIME
from compositor.spec import BuiltImage, ExtraFile
from compositor.stream_vmdk import write_stream_vmdk

from .layer_builder import MTIME, chardev, debugfs, directory, file, hardlink, ls, stat, symlink, write_tar

BIG_DIR_FILES = 1000  # more than bigdirs keeps in place (3 blocks of entries): some move


def _layers(root: Path) -> tuple[LayerSource, ...]:
    os_tar = write_tar(root / "os.tar", [
        directory("etc"), file("etc/os-release", b"ID=test\n"), directory("dev"),
        chardev("dev/null", 1, 3), symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        directory("usr"), directory("usr/share"), directory("usr/share/many"),
        *[file(f"usr/share/many/f{i:04d}", b"x") for i in range(BIG_DIR_FILES)],
    ])
    # A directory layer: its files are hard-linked into the staging tree, so their ctime and
    # atime are whenever that happened, not part of the layer.
    app = root / "app"
    (app / "opt" / "app").mkdir(parents=True)
    (app / "opt" / "app" / "tool").write_bytes(b"#!/bin/sh\necho app\n")
    os.link(app / "opt" / "app" / "tool", app / "opt" / "app" / "tool-link")
    for path in [app / "opt" / "app" / "tool", app / "opt" / "app", app / "opt"]:
        os.utime(path, (MTIME + 50, MTIME + 100))
    vda = write_tar(root / "vda.tar", [directory("etc"), file("etc/vda.conf", b"vda=1\n"),
                                       hardlink("etc/vda.conf.bak", "etc/vda.conf")])
    return (LayerSource("os", "os", os_tar), LayerSource("app", "app", app),
            LayerSource("vda", "platform", vda))


def _spec(layers: tuple[LayerSource, ...]) -> ImageSpec:
    return ImageSpec(layers=layers, size_gib=1, format="qcow2", extra_files=(
        ExtraFile("/usr/lib/layerbot/firstboot", b"#!/bin/sh\n", 0o755),), extra_symlinks=(
        ("/etc/systemd/system/multi-user.target.wants/layerbot-firstboot.service",
         "/usr/lib/layerbot/firstboot"),))  # a link's own mtime once came from the clock


async def _build_twice(spec: ImageSpec, tmp_path: Path) -> tuple[BuiltImage, BuiltImage]:
    first = await build_image(spec, work_dir=tmp_path / "work1", cache_dir=tmp_path / "cache1",
                              ram_scratch=False)  # the raw disk is compared too
    time.sleep(1.1)  # every clock-derived second differs between the builds
    second = await build_image(spec, work_dir=tmp_path / "work2", cache_dir=tmp_path / "cache2",
                               ram_scratch=False)
    assert not first.cache_hit and not second.cache_hit
    assert first.cache_key == second.cache_key
    return first, second


def _differing_bytes(a: Path, b: Path) -> list[str]:
    out = subprocess.run(["cmp", "-l", str(a), str(b)], capture_output=True, text=True)
    return out.stdout.splitlines()[:10]


async def test_two_builds_of_one_ext4_template_are_byte_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "BIG_DIR_ENTRIES", BIG_DIR_FILES // 2)
    first, second = await _build_twice(_spec(_layers(tmp_path)), tmp_path)
    raws = [next((tmp_path / cache / "raw").glob("*.img")) for cache in ("cache1", "cache2")]
    assert filecmp.cmp(*raws, shallow=False), _differing_bytes(*raws)
    assert filecmp.cmp(first.path, second.path, shallow=False), \
        _differing_bytes(first.path, second.path)
    assert len(ls(raws[0], "/usr/share/many")) == BIG_DIR_FILES
    assert "Root node dump" in debugfs(raws[0], "htree /usr/share/many")  # it was spread
    # pinned to the newest mtime in the layers, not zeroed; the layers' own mtimes are kept
    epoch = f"ctime: {MTIME + 100:#x}:"
    tool = stat(raws[0], "/opt/app/tool")
    assert tool is not None and tool.mtime == MTIME + 100 and epoch in tool.text
    release = stat(raws[0], "/etc/os-release")
    assert release is not None and release.mtime == MTIME and epoch in release.text
    published = stat(raws[0], "/usr/lib/layerbot/firstboot")
    assert published is not None and published.mtime == MTIME + 100


#: format -> qemu-img's name for it
CONVERTED = {"vmdk": "vmdk", "vhd": "vpc", "vhd-dynamic": "vpc", "vhdx": "vhdx", "gce-tar": None}


def _qemu_img(*args: str | Path) -> str:
    done = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_every_format_of_one_raw_disk_is_byte_identical_across_builds(tmp_path: Path) -> None:
    """Two caches, each composites the raw disk once (a second apart) and converts it to every
    format: vmdk (qemu-img's streamOptimized), vhd, vhdx, gce-tar, and vSphere's streamOptimized
    VMDK (StreamVmdk) of the raw disk. Each pair is compared byte for byte, and each file against
    the raw disk by qemu-img."""
    spec = _spec(_layers(tmp_path))
    built: dict[str, list[Path]] = {fmt: [] for fmt in CONVERTED}
    for run in ("1", "2"):
        for fmt in CONVERTED:
            image = await build_image(dataclasses.replace(spec, format=fmt),  # type: ignore[arg-type]
                                      work_dir=tmp_path / f"work{run}", cache_dir=tmp_path / f"cache{run}",
                                      ram_scratch=False)  # the raw disk is compared too
            assert not image.cache_hit
            built[fmt].append(image.path)
        time.sleep(1.1)  # every clock-derived second differs between the builds
    raws = [next((tmp_path / f"cache{run}" / "raw").glob("*.img")) for run in ("1", "2")]
    assert filecmp.cmp(*raws, shallow=False), _differing_bytes(*raws)
    streams = [tmp_path / f"stream{run}.vmdk" for run in ("1", "2")]
    for raw, stream in zip(raws, streams, strict=True):
        write_stream_vmdk(raw, stream, workers=2)
    built["stream-vmdk"] = streams

    differing = {fmt: _differing_bytes(*paths) for fmt, paths in built.items()
                 if not filecmp.cmp(*paths, shallow=False)}
    assert not differing, differing

    for fmt, qemu_fmt in [*CONVERTED.items(), ("stream-vmdk", "vmdk")]:
        if qemu_fmt is None:
            continue
        path = built[fmt][0]
        if qemu_fmt != "vpc":  # qemu-img has no check for VHD
            _qemu_img("check", "-f", qemu_fmt, path)
        assert "Images are identical" in _qemu_img("compare", "-f", "raw", "-F", qemu_fmt, raws[0], path)
    vmdk_descriptor = built["vmdk"][0].read_bytes()[512:1536]
    assert b'RW 2097152 SPARSE "disk.vmdk"' in vmdk_descriptor

    with tarfile.open(built["gce-tar"][0], "r|gz") as tar:
        member = tar.next()
        assert member is not None and member.name == "disk.raw"
        assert (member.mtime, member.mode, member.uid, member.gid, member.uname, member.gname) == \
            (CONVERTED_TIME, 0o644, 0, 0, "", "")
    with open(built["gce-tar"][0], "rb") as fh:
        assert fh.read(8)[4:] == bytes(4)  # gzip's MTIME: none
