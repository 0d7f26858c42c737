"""Cache: unchanged specs reuse the artifact, other formats reuse the raw disk, digests are cached."""

from __future__ import annotations

import os
import time
from pathlib import Path

from compositor import (
    ExtraFile,
    ImageSpec,
    LayerSource,
    build_image,
    cache_lookup,
    layer_digest,
)
from compositor import digest as digest_module

from .layer_builder import cat, directory, file, write_tar


def _spec(layer: Path, fmt: str = "qcow2", extra: bytes = b"v1") -> ImageSpec:
    return ImageSpec(
        layers=(LayerSource("os", "os", layer),), size_gib=1, format=fmt,  # type: ignore[arg-type]
        extra_files=(ExtraFile("/etc/layerbot", extra),),
    )


async def test_republish_hits_cache(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar.zst", [directory("etc"), file("etc/a", b"a")])
    dirs = {"work_dir": tmp_path / "work", "cache_dir": tmp_path / "cache"}
    assert cache_lookup(_spec(layer), cache_dir=tmp_path / "cache") is None
    first = await build_image(_spec(layer), **dirs)
    assert not first.cache_hit
    started = time.monotonic()
    second = await build_image(_spec(layer), **dirs)
    assert time.monotonic() - started < 1.0
    assert second.cache_hit and second.path == first.path and second.cache_key == first.cache_key
    assert second.virtual_size == first.virtual_size and second.layer_digests == first.layer_digests
    looked_up = cache_lookup(_spec(layer), cache_dir=tmp_path / "cache")
    assert looked_up is not None and looked_up.path == first.path and looked_up.cache_hit
    changed = await build_image(_spec(layer, extra=b"v2"), **dirs)
    assert not changed.cache_hit and changed.cache_key != first.cache_key
    assert not list((tmp_path / "work").iterdir())
    assert not list((tmp_path / "cache" / "tmp").iterdir())


async def test_other_format_reuses_raw_disk(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/a", b"a")])
    dirs = {"work_dir": tmp_path / "work", "cache_dir": tmp_path / "cache"}
    raw = await build_image(_spec(layer, "raw"), **dirs)
    from compositor import build as build_module

    async def no_rebuild(*args: object) -> None:
        raise AssertionError("the raw disk should come from the cache")

    monkeypatch.setitem(build_module.FILESYSTEM_BUILDERS, "ext4", no_rebuild)
    vhdx = await build_image(_spec(layer, "vhdx"), **dirs)
    assert not vhdx.cache_hit and vhdx.path.suffix == ".vhdx"
    assert cat(raw.path, "/etc/layerbot") == b"v1"


def test_layer_digest_is_cached_by_signature(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc/a").write_bytes(b"a")
    os.symlink("/etc/a", layer / "etc/link")
    cache = tmp_path / "cache"
    first = layer_digest(layer, cache_dir=cache)
    assert len(first) == 64
    calls: list[Path] = []
    real = digest_module._dir_digest
    monkeypatch.setattr(digest_module, "_dir_digest", lambda p: calls.append(p) or real(p))
    assert layer_digest(layer, cache_dir=cache) == first and not calls
    (layer / "etc/a").write_bytes(b"b")
    changed = layer_digest(layer, cache_dir=cache)
    assert changed != first and calls
    archive = write_tar(tmp_path / "l.tar", [file("x", b"x")])
    assert layer_digest(archive, cache_dir=cache) == layer_digest(archive, cache_dir=cache)


def test_directory_digest_covers_metadata(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "a").write_bytes(b"a")
    before = digest_module._dir_digest(layer)
    os.chmod(layer / "a", 0o600)
    assert digest_module._dir_digest(layer) != before


async def test_directory_layer_is_a_cache_hit_right_after_its_first_build(tmp_path: Path) -> None:
    layer = tmp_path / "os"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "a").write_bytes(b"a")
    dirs = {"work_dir": tmp_path / "work", "cache_dir": tmp_path / "cache"}
    first = await build_image(_spec(layer), **dirs)
    # building hard-links the layer's files into the staging tree and back out
    looked_up = cache_lookup(_spec(layer), cache_dir=tmp_path / "cache")
    assert looked_up is not None and looked_up.path == first.path
