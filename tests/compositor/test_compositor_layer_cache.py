"""The extracted-layer cache: images built from cached layers equal images built without them,
file by file; only changed layers are extracted; damaged entries are extracted again."""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import compositor.build as build_module
from compositor import (
    ImageSpec,
    LayerError,
    LayerSource,
    build_image,
    cache_usage,
    evict_cache,
    scratch,
    sweep_stale,
)
from compositor.budget import SpaceBudget
from compositor.layer_cache import ENABLE_ENV, FACTS, TABLE, TREE, LayerCache
from compositor.tarlayer import extract_tar_layer

from .layer_builder import (
    Entry,
    chardev,
    directory,
    file,
    hardlink,
    image_manifest,
    symlink,
    write_tar,
)


@pytest.fixture(autouse=True)
def on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer cache serves builds that work on disk (in RAM, extracting again is cheaper)."""
    monkeypatch.setenv(scratch.ENV_VAR, "off")


def _os_entries() -> list[Entry]:
    return [
        directory("etc"), file("etc/motd", b"os motd\n"), file("etc/removed", b"gone\n"),
        file("etc/shadow", b"root:*:1::::::\n", mode=0o640, gid=42),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        directory("usr"), directory("usr/bin"),
        file("usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o4755),
        hardlink("usr/bin/tool-again", "usr/bin/tool"),
        file("usr/bin/shared", b"shared\n", mode=0o755),
        hardlink("usr/bin/shared-link", "usr/bin/shared"),
        directory("dev"), chardev("dev/null", 1, 3),
        Entry("dev/sda", tarfile.BLKTYPE, mode=0o660, gid=6, major=8, minor=0),
        directory("run"), Entry("run/initctl", tarfile.FIFOTYPE, mode=0o600),
        directory("opt/cache"), file("opt/cache/old", b"old"),
        directory("opt/cache/sub"), file("opt/cache/sub/older", b"older"),
        directory("var/lib/dir-removed"), file("var/lib/dir-removed/x", b"x"),
        directory("home/user", mode=0o700, uid=1000, gid=1000),
        file("home/user/.profile", b"PATH=$PATH\n", mode=0o600, uid=1000, gid=1000, mtime=1_600_000_000),
    ]


def _app1_entries(motd: bytes = b"app1 motd\n") -> list[Entry]:
    return [
        file("etc/.wh.removed"),
        file("etc/motd", motd),
        directory("opt/cache"), file("opt/cache/new", b"new"),
        file("opt/cache/.wh..wh..opq"),
        file("var/lib/.wh.dir-removed"),
        file("srv/data/app1.bin", os.urandom(3 * 4096 + 17), uid=33, gid=33),
    ]


def _layers(root: Path) -> tuple[LayerSource, ...]:
    root.mkdir(parents=True, exist_ok=True)
    os_tar = write_tar(root / "os.tar.zst", _os_entries())
    app1 = write_tar(root / "app1.tar.gz", _app1_entries())
    app2 = root / "app2"
    (app2 / "etc").mkdir(parents=True)
    (app2 / "etc/motd").write_bytes(b"app2 motd\n")
    (app2 / "etc/app2.conf").write_bytes(b"app2=1\n")
    os.link(app2 / "etc/app2.conf", app2 / "etc/app2.conf.bak")
    with contextlib.suppress(OSError):  # without user xattrs, their absence is compared
        os.setxattr(app2 / "etc/app2.conf", "user.layerbot", b"tagged")
    platform = write_tar(root / "platform.tar", [
        file("etc/motd", b"platform motd\n", mode=0o600),
        file("usr/bin/.wh.shared-link"),
        symlink("usr/bin/vda", "tool"),
        hardlink("etc/motd.bak", "etc/motd"),
    ])
    return (LayerSource("os", "os", os_tar), LayerSource("app1", "app", app1),
            LayerSource("app2", "app", app2), LayerSource("platform", "platform", platform))


def _spec(layers: tuple[LayerSource, ...]) -> ImageSpec:
    return ImageSpec(layers=layers, size_gib=1, format="raw")


class Extractions:
    """Counts the tar layers build_image extracts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real: Callable[..., object] = build_module.extract_tar_layer

        def counting(layer: LayerSource, *args: object) -> object:
            self.names.append(layer.name)
            return real(layer, *args)

        monkeypatch.setattr(build_module, "extract_tar_layer", counting)


async def _build(spec: ImageSpec, tmp: Path, cache: str, monkeypatch: pytest.MonkeyPatch, *,
                 layer_cache: bool = True) -> Path:
    monkeypatch.setenv(ENABLE_ENV, "1" if layer_cache else "0")
    built = await build_image(spec, work_dir=tmp / "work", cache_dir=tmp / cache)
    assert not built.cache_hit
    return built.path


def _forget_images(cache: Path) -> None:
    """Keep the extracted layers, drop the disks: the next build composites again."""
    shutil.rmtree(cache / "images")
    shutil.rmtree(cache / "raw")


async def test_an_image_from_cached_layers_equals_the_image_built_without_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(_layers(tmp_path / "layers"))
    plain = await _build(spec, tmp_path, "plain", monkeypatch, layer_cache=False)
    assert not (tmp_path / "plain" / "layers").exists()
    extractions = Extractions(monkeypatch)
    stored = await _build(spec, tmp_path, "cache", monkeypatch)
    assert sorted(extractions.names) == ["app1", "os", "platform"]
    assert len(os.listdir(tmp_path / "cache" / "layers")) == 3  # tar layers only
    _forget_images(tmp_path / "cache")
    extractions.names.clear()
    reused = await _build(spec, tmp_path, "cache", monkeypatch)
    assert extractions.names == []

    expected = image_manifest(plain, tmp_path / "m-plain")
    assert "/dev/sda" in expected and "/run/initctl" in expected and "/etc/removed" not in expected
    if os.listxattr(tmp_path / "layers" / "app2" / "etc/app2.conf"):
        assert "user.layerbot" in str(expected["/etc/app2.conf"])
    assert image_manifest(stored, tmp_path / "m-stored") == expected
    assert image_manifest(reused, tmp_path / "m-reused") == expected
    # and the disks themselves: the same inputs give the same bytes, cached layers or not
    assert filecmp.cmp(plain, stored, shallow=False)
    assert filecmp.cmp(plain, reused, shallow=False)


async def test_a_republish_after_one_changed_layer_extracts_only_that_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = _layers(tmp_path / "layers")
    await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    write_tar(Path(layers[1].source), _app1_entries(motd=b"app1 motd, version 2\n"))
    extractions = Extractions(monkeypatch)
    republished = await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    assert extractions.names == ["app1"]
    plain = await _build(_spec(layers), tmp_path, "plain", monkeypatch, layer_cache=False)
    assert image_manifest(republished, tmp_path / "m1") == image_manifest(plain, tmp_path / "m2")
    assert len(os.listdir(tmp_path / "cache" / "layers")) == 4  # both versions of app1


def _entry_of(cache: Path, predicate: Callable[[Path], bool]) -> Path:
    return next(e for e in (cache / "layers").iterdir() if predicate(e))


def _truncate_a_file(entry: Path) -> None:
    with open(entry / TREE / "srv/data/app1.bin", "r+b") as fh:
        fh.truncate(100)


def _remove_a_file(entry: Path) -> None:
    (entry / TREE / "opt/cache/new").unlink()


def _add_a_stray_file(entry: Path) -> None:
    (entry / TREE / "etc/stray").write_bytes(b"not in the layer")


def _change_a_mtime(entry: Path) -> None:
    os.utime(entry / TREE / "etc/motd", (1, 1))


def _lose_the_table(entry: Path) -> None:
    (entry / TABLE).unlink()


def _garble_the_facts(entry: Path) -> None:
    (entry / FACTS).write_text('{"v": 1, "entr')


def _lose_the_facts(entry: Path) -> None:
    (entry / FACTS).unlink()


@pytest.mark.parametrize("damage", [
    _truncate_a_file, _remove_a_file, _add_a_stray_file, _change_a_mtime, _lose_the_table,
    _garble_the_facts, _lose_the_facts,
])
async def test_a_damaged_cached_layer_is_extracted_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None]) -> None:
    layers = _layers(tmp_path / "layers")
    first = await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    expected = image_manifest(first, tmp_path / "m1")
    cache = tmp_path / "cache"
    app1 = _entry_of(cache, lambda e: (e / TREE / "srv").exists())
    damage(app1)
    _forget_images(cache)
    extractions = Extractions(monkeypatch)
    again = await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    assert extractions.names == ["app1"]
    assert image_manifest(again, tmp_path / "m2") == expected
    # the broken entry was replaced by a good one: the next build extracts nothing
    _forget_images(cache)
    extractions.names.clear()
    await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    assert extractions.names == []
    assert not os.listdir(cache / "tmp")


async def test_a_cached_os_layer_with_device_nodes_is_refused_as_an_app_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = _layers(tmp_path / "layers")
    await _build(_spec(layers), tmp_path, "cache", monkeypatch)
    as_app = (layers[1], LayerSource("devices", "app", layers[0].source))
    monkeypatch.setenv(ENABLE_ENV, "1")
    with pytest.raises(LayerError, match="layer 'devices', member 'dev/null': device node in an app"):
        await build_image(_spec((LayerSource("base", "os", layers[3].source), *as_app)),
                          work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


def _stored_layer(cache_dir: Path, tmp: Path, name: str, data_kib: int, age_s: float) -> Path:
    """A layer extracted and stored through LayerCache, last used age_s ago; its entry."""
    archive = write_tar(tmp / f"{name}.tar", [file(f"opt/{name}.bin", os.urandom(data_kib << 10))])
    layers = LayerCache(cache_dir)
    temp = layers.new_extraction()
    tree = extract_tar_layer(LayerSource(name, "app", archive), temp / TREE, threading.Event())
    layers.store(f"digest-{name}", temp, tree)
    layers.close()
    entry = layers.entry(f"digest-{name}")
    os.utime(entry / FACTS, (time.time() - age_s, time.time() - age_s))
    return entry


def test_layers_are_evicted_with_images_least_recently_used_first_and_held_ones_stay(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = _stored_layer(cache, tmp_path, "old", 512, age_s=9000)
    held = _stored_layer(cache, tmp_path, "held", 512, age_s=8000)
    image = cache / "images" / "img.qcow2"
    image.parent.mkdir(parents=True)
    image.write_bytes(os.urandom(256 << 10))
    (cache / "images" / "img.json").write_text('{"virtual_size": 1, "format": "qcow2"}')
    for path in (image, cache / "images" / "img.json"):
        os.utime(path, (time.time() - 7000, time.time() - 7000))
    recent = _stored_layer(cache, tmp_path, "recent", 512, age_s=10)

    usage = cache_usage(cache)
    assert [(e.key, e.kind) for e in usage.entries] == [
        ("digest-old", "layer"), ("digest-held", "layer"), ("img", "qcow2"),
        ("digest-recent", "layer")]
    assert all(512 << 10 <= e.size < 1 << 20 for e in usage.entries if e.kind == "layer")

    using = LayerCache(cache)  # a build that uses the held layer until its raw disk is written
    spec_layer = LayerSource("held", "app", tmp_path / "held.tar")
    assert using.open("digest-held", spec_layer, SpaceBudget.unlimited()) is not None
    try:
        result = evict_cache(cache, 0)
        assert [e.key for e in result.removed] == ["digest-old", "img"]
        assert result.busy == 2  # held, and used in the last MIN_AGE seconds
        assert not old.exists() and held.is_dir() and recent.is_dir()
        assert not image.exists()
    finally:
        using.close()
    # open() renewed its last use: it is recent now, so it stays until min_age passes
    assert evict_cache(cache, 0).removed == []
    assert [e.key for e in evict_cache(cache, 0, min_age=0).removed] == [
        "digest-recent", "digest-held"]
    assert not held.exists() and not recent.exists()
    assert cache_usage(cache).entries == [] and not os.listdir(cache / "tmp")


def test_a_killed_build_leaves_a_partial_layer_that_sweep_stale_removes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from pathlib import Path
        from compositor.layer_cache import LayerCache, TREE
        temp = LayerCache(Path({str(cache)!r})).new_extraction()
        (temp / TREE / "half-written").write_bytes(b"x" * 4096)
        os._exit(9)  # killed mid-extraction: nothing cleans up
    """)], cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 9
    leftovers = os.listdir(cache / "tmp")
    assert len(leftovers) == 1 and leftovers[0].endswith(".layer")
    removed = sweep_stale(tmp_path / "work", cache)
    assert [p.name for p in removed] == leftovers
    assert not os.listdir(cache / "tmp") and not (cache / "layers").exists()
