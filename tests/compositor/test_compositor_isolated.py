"""build_image_isolated: build_image in a child process, with the same results and errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from compositor import (
    CompositorError,
    ExtraFile,
    ImageSpec,
    LayerError,
    LayerSource,
    ToolFailedError,
    build_image,
)
from compositor.firstboot import publish_layer
from compositor.guestos import GuestOSError
from compositor.isolated import (
    build_image_isolated,
    error_from_json,
    error_to_json,
    publish_layer_isolated,
    spec_from_json,
    spec_to_json,
)

from .child_processes import children
from .layer_builder import directory, file, write_tar


def _using(path: Path) -> list[str]:
    """Processes (tools left running) whose command line names path."""
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(path) in line and "ps -eo" not in line]


def test_spec_round_trip(tmp_path: Path) -> None:
    spec = ImageSpec(
        layers=(LayerSource("os", "os", tmp_path / "os.tar"), LayerSource("a", "app", tmp_path)),
        size_gib=3, format="vmdk", filesystem="ntfs",
        extra_files=(ExtraFile("/usr/lib/x", b"\x00\xffbin", 0o755, 1, 2),),
        extra_symlinks=(("/etc/a", "/etc/b"),),
    )
    assert spec_from_json(spec_to_json(spec)) == spec


def test_errors_keep_class_message_and_attributes() -> None:
    for exc in (LayerError("vda", "../../escape.txt", "unsafe path"),
                ToolFailedError("mke2fs", 1, "no space"), CompositorError("plain")):
        again = error_from_json(error_to_json(exc))
        assert type(again) is type(exc)
        assert str(again) == str(exc)
        assert vars(again) == vars(exc)


async def test_success_with_progress(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "os-release").write_text("ID=test\n")
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2",
                     extra_files=(ExtraFile("/opt/hello", b"hi\n"),))
    dirs = {"work_dir": tmp_path / "work", "cache_dir": tmp_path / "cache"}
    seen: list[tuple[str, float]] = []
    built = await build_image_isolated(spec, **dirs, progress=lambda n, f: seen.append((n, f)))
    assert not built.cache_hit and built.path.is_file() and built.format == "qcow2"
    assert built.file_size == built.path.stat().st_size and set(built.layer_digests) == {"os"}
    assert seen and seen[-1] == ("done", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    again = await build_image(spec, **dirs)  # the same cache, seen from this process
    assert again.cache_hit and again.cache_key == built.cache_key and again.path == built.path
    assert list((tmp_path / "work").iterdir()) == []


async def test_error_is_raised_with_the_same_class_and_message(tmp_path: Path) -> None:
    bad = write_tar(tmp_path / "bad.tar", [directory("etc"), file("../../escape.txt", b"x")])
    spec = ImageSpec(layers=(LayerSource("vda", "os", bad),), size_gib=1, format="raw")
    dirs = {"work_dir": tmp_path / "work", "cache_dir": tmp_path / "cache"}
    with pytest.raises(LayerError) as direct:
        await build_image(spec, **dirs)
    with pytest.raises(LayerError) as isolated:
        await build_image_isolated(spec, **dirs)
    assert str(isolated.value) == str(direct.value)
    assert str(isolated.value).startswith("layer 'vda', member '../../escape.txt': ")
    assert (isolated.value.layer, isolated.value.member) == ("vda", "../../escape.txt")


@pytest.mark.parametrize("stage", ["extracting", "converting"])
async def test_cancel_stops_the_child_and_cleans_up(tmp_path: Path, stage: str) -> None:
    before = children()
    noise = os.urandom(1 << 20)
    entries = [directory("data")]
    entries += [file(f"data/blob{i}", noise[i:] + noise[:i]) for i in range(96)]
    layer = write_tar(tmp_path / "os.tar.gz", entries)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="vmdk")
    reached = asyncio.Event()

    def progress(note: str, fraction: float) -> None:
        if note.startswith(stage):
            reached.set()

    task = asyncio.create_task(build_image_isolated(
        spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache", progress=progress))
    await asyncio.wait_for(reached.wait(), 60)
    await asyncio.sleep(0.3)
    assert not task.done()
    assert children() - before  # the compositor process
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children() - before == set() and _using(tmp_path) == []
    assert list((tmp_path / "work").iterdir()) == []
    temps = tmp_path / "cache" / "tmp"  # made on the first cache temp: a cancel may come first
    assert not temps.exists() or list(temps.iterdir()) == []
    assert not (tmp_path / "cache" / "images").exists()


async def test_publish_layer_isolated_matches_publish_layer(tmp_path: Path) -> None:
    root = tmp_path / "debian"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    (root / "lib" / "systemd").mkdir(parents=True)
    (root / "lib" / "systemd" / "systemd").write_bytes(b"\x7fELF")
    (root / "sbin").mkdir()
    (root / "sbin" / "init").symlink_to("/lib/systemd/systemd")
    script = tmp_path / "hello.sh"
    script.write_bytes(b"#!/bin/sh\necho \xff\n")
    layers = (LayerSource("debian", "os", root),)
    expected = publish_layer(layers, "ext4", [script], "manual")
    assert await publish_layer_isolated(layers, "ext4", [script], "manual") == expected


async def test_publish_layer_isolated_raises_guest_os_error(tmp_path: Path) -> None:
    layers = (LayerSource("empty", "os", tmp_path),)
    with pytest.raises(GuestOSError) as direct:
        publish_layer(layers, "ntfs", [], "auto")
    with pytest.raises(GuestOSError) as isolated:
        await publish_layer_isolated(layers, "ntfs", [], "auto")
    assert str(isolated.value) == str(direct.value)
