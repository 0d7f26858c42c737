"""build_image(publish_layer=...): the guest inspection runs while the layers are hashed and
extracted, and gives the image the inspection-first path gave."""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import threading
import time
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource, build_image
from compositor.firstboot import publish_layer
from compositor.guestos import GuestOSError
from compositor.isolated import build_image_isolated

from .layer_builder import directory, file, symlink, write_tar


def _debian(tmp_path: Path) -> tuple[LayerSource, ...]:
    os_tar = write_tar(tmp_path / "debian.tar.gz", [
        directory("etc"), file("etc/os-release", b"ID=debian\n"), directory("lib"),
        directory("lib/systemd"), file("lib/systemd/systemd", b"\x7fELF", mode=0o755),
        directory("sbin"), symlink("sbin/init", "/lib/systemd/systemd"),
        directory("var"), file("var/data.bin", bytes(3 << 20)),
    ])
    app = write_tar(tmp_path / "app.tar", [directory("opt"), file("opt/app", b"app\n")])
    return LayerSource("debian", "os", os_tar), LayerSource("app", "app", app)


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    return script


async def test_the_overlapped_inspection_gives_the_same_image(tmp_path: Path) -> None:
    layers, script = _debian(tmp_path), _script(tmp_path)
    files, links = publish_layer(layers, "ext4", [script], "auto", 1)
    first = ImageSpec(layers=layers, size_gib=1, format="qcow2", extra_files=files,
                      extra_symlinks=links)
    inspected_first = await build_image(first, work_dir=tmp_path / "w1", cache_dir=tmp_path / "c1")
    bare = dataclasses.replace(first, extra_files=(), extra_symlinks=())
    overlapped = await build_image(
        bare, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c2",
        publish_layer=functools.partial(publish_layer, layers, "ext4", [script], "auto", 1))
    assert overlapped.cache_key == inspected_first.cache_key
    assert filecmp.cmp(overlapped.path, inspected_first.path, shallow=False)
    # and through the compositor's child process, into the same cache: a hit
    again = await build_image_isolated(bare, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c2",
                                       publish_layer=([script], "auto", 1))
    assert again.cache_hit and again.cache_key == inspected_first.cache_key


async def test_the_inspection_runs_while_the_layers_are_extracted(tmp_path: Path) -> None:
    layers, script = _debian(tmp_path), _script(tmp_path)
    extracting = threading.Event()
    waited: list[bool] = []

    def inspect_once_extracting() -> tuple:  # type: ignore[type-arg]
        # inspection-first would wait here for ever (bounded: the test fails instead)
        waited.append(extracting.wait(30))
        return publish_layer(layers, "ext4", [script], "auto", 1)

    def on_progress(note: str, _: float) -> None:
        if note.startswith("extracting layer"):
            extracting.set()

    bare = ImageSpec(layers=layers, size_gib=1, format="qcow2")
    built = await build_image(bare, work_dir=tmp_path / "w", cache_dir=tmp_path / "c",
                              progress=on_progress, publish_layer=inspect_once_extracting)
    assert waited == [True] and not built.cache_hit


async def test_an_inspection_error_is_the_builds_error_and_nothing_is_left(tmp_path: Path) -> None:
    """The layers' own problem comes first, as when the inspection ran before the build: here
    the extraction fails at once on a corrupt layer, the inspection later says the guest
    cannot boot; the build raises the inspection's error."""
    layers = _debian(tmp_path)
    corrupt = tmp_path / "broken.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + bytes(100))
    spec = ImageSpec(layers=(*layers, LayerSource("broken", "app", corrupt)), size_gib=1,
                     format="qcow2")

    def slow_and_wrong() -> tuple:  # type: ignore[type-arg]
        time.sleep(0.5)
        raise GuestOSError("the layers have no /sbin/init")

    with pytest.raises(GuestOSError, match="no /sbin/init"):
        await build_image(spec, work_dir=tmp_path / "w", cache_dir=tmp_path / "c",
                          publish_layer=slow_and_wrong)
    assert list((tmp_path / "w").iterdir()) == []
    assert not (tmp_path / "c" / "images").exists()


async def test_an_inspection_error_crosses_the_child_process(tmp_path: Path) -> None:
    spec = ImageSpec(layers=_debian(tmp_path), size_gib=1, format="qcow2", filesystem="ntfs")
    with pytest.raises(GuestOSError, match="no Windows"):
        await build_image_isolated(spec, work_dir=tmp_path / "w", cache_dir=tmp_path / "c",
                                   publish_layer=([], "auto", 1))
