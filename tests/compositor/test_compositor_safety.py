"""Unsafe layers fail with a LayerError that names the layer and the member; nothing escapes."""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import pytest

from compositor import (
    CompositorError,
    DiskTooSmallError,
    ImageSpec,
    LayerError,
    LayerSource,
    ToolMissingError,
    build_image,
    disk,
    required_tools,
    tools,
)
from compositor import build as build_module

from .layer_builder import Entry, chardev, directory, file, hardlink, symlink, write_tar

BASE = [directory("etc"), file("etc/os-release", b"ID=test\n")]


async def _publish(tmp_path: Path, app: list[Entry], kind: str = "app", size: int = 1) -> None:
    os_layer = write_tar(tmp_path / "os.tar", BASE)
    app_layer = write_tar(tmp_path / "bad.tar.gz", app)
    spec = ImageSpec(
        layers=(LayerSource("os", "os", os_layer), LayerSource("bad", kind, app_layer)),  # type: ignore[arg-type]
        size_gib=size, format="raw",
    )
    await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("entries", "member", "words"),
    [
        ([file("../escape", b"x")], "../escape", "unsafe path"),
        ([file("etc/../../escape", b"x")], "etc/../../escape", "unsafe path"),
        ([file("/etc/abs", b"x")], "/etc/abs", "absolute"),
        ([hardlink("etc/shadow-link", "/etc/shadow")], "etc/shadow-link", "outside the layer"),
        ([hardlink("etc/up", "../outside")], "etc/up", "outside the layer"),
        ([hardlink("etc/lower", "etc/os-release")], "etc/lower", "outside the layer"),
        (
            [symlink("etc/evil", "/tmp"), file("etc/evil/planted", b"x")],
            "etc/evil/planted", "through the symlink",
        ),
        (
            [symlink("rel", "../../.."), file("rel/planted", b"x")],
            "rel/planted", "through the symlink",
        ),
        ([chardev("dev/mem", 1, 1)], "dev/mem", "device node in an app layer"),
    ],
)
async def test_unsafe_member_rejected(
    tmp_path: Path, entries: list[Entry], member: str, words: str
) -> None:
    with pytest.raises(LayerError) as info:
        await _publish(tmp_path, entries)
    message = str(info.value)
    assert "'bad'" in message and member in message and words in message
    assert info.value.layer == "bad"
    assert not list((tmp_path / "work").iterdir())
    assert not (tmp_path / "planted").exists() and not Path("/tmp/planted").exists()


async def test_device_node_in_platform_layer_rejected(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="device node in an platform layer"):
        await _publish(tmp_path, [chardev("dev/kmsg", 1, 11)], kind="platform")


async def test_implicit_dir_over_lower_symlink_rejected(tmp_path: Path) -> None:
    os_layer = write_tar(tmp_path / "os.tar", [symlink("lib", "/usr/lib")])
    app_layer = write_tar(tmp_path / "app.tar", [file("lib/libx.so", b"x")])
    spec = ImageSpec(
        layers=(LayerSource("os", "os", os_layer), LayerSource("app", "app", app_layer)),
        size_gib=1, format="raw",
    )
    with pytest.raises(LayerError, match=r"'app'.*lib/.*symlink in a lower layer"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(("mib", "early"), [(1000, False), (1200, True)])
async def test_disk_too_small_fails_early_with_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mib: int, early: bool
) -> None:
    """1000 MiB fit the 1 GiB the layers may unpack to but not the 980 MiB ext4 holds: the
    merged tree's check says so before mke2fs runs. 1200 MiB do not even fit the disk: the
    member's header is enough, nothing is unpacked (compositor.budget)."""
    big = tmp_path / "big.tar"
    with open(big, "wb") as fh:  # one member whose data is a hole
        info = tarfile.TarInfo("var/big.bin")
        info.size = mib << 20
        fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
        fh.truncate(512 + info.size + 1024)
    calls: list[str] = []
    real_run = build_module.FILESYSTEM_BUILDERS["ext4"]

    async def spy(*args: object) -> None:
        calls.append("ext4")
        await real_run(*args)

    monkeypatch.setitem(build_module.FILESYSTEM_BUILDERS, "ext4", spy)
    spec = ImageSpec(layers=(LayerSource("os", "os", big),), size_gib=1, format="qcow2")
    mkfs_calls: list[object] = []
    monkeypatch.setattr(disk, "make_ext4", lambda *a, **k: mkfs_calls.append(a))
    with pytest.raises(DiskTooSmallError) as info:
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    assert not mkfs_calls
    assert bool(calls) is not early
    message = str(info.value)
    if early:
        assert message.startswith("layer 'os', member 'var/big.bin': the layers need more than ")
        assert re.search(r"need more than 120\d MiB but a 1 GiB disk holds at most 980 MiB", message)
    else:
        assert re.search(r"need about 100\d MiB but a 1 GiB disk holds at most 980 MiB", message)
    assert "at least 2 GiB" in message
    assert info.value.needed_bytes >= mib << 20
    assert not list((tmp_path / "work").iterdir())
    assert not list((tmp_path / "cache" / "tmp").glob("*"))


async def test_unknown_filesystem_not_supported(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar", BASE)
    spec = ImageSpec(
        layers=(LayerSource("os", "os", layer),), size_gib=1, format="vhd",
        filesystem="btrfs",  # type: ignore[arg-type]
    )
    with pytest.raises(CompositorError, match="btrfs: not yet supported"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


async def test_missing_layer_source(tmp_path: Path) -> None:
    spec = ImageSpec(
        layers=(LayerSource("os", "os", tmp_path / "nope.tar"),), size_gib=1, format="raw"
    )
    with pytest.raises(LayerError, match=r"'os'.*does not exist"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


async def test_missing_tool_gives_apt_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = write_tar(tmp_path / "os.tar", BASE)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(tools, "_EXTRA_DIRS", ())
    statuses = {t.name: t for t in required_tools(["vmdk", "gce-tar"])}
    assert statuses["qemu-img"].path is None and statuses["qemu-img"].package == "qemu-utils"
    assert statuses["mke2fs"].package == "e2fsprogs" and statuses["tar"].package == "tar"
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    with pytest.raises(ToolMissingError, match=r"sudo apt-get install \w+"):
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


def test_required_tools_found_here() -> None:
    statuses = required_tools(["raw", "qcow2", "vmdk", "vhd", "vhdx", "gce-tar"])
    missing = [t.name for t in statuses if t.path is None]
    assert missing == []
    assert all(os.path.isabs(t.path) for t in statuses if t.path)
