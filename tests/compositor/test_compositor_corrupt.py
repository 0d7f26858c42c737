"""A corrupt, truncated or non-archive layer fails with a LayerError naming the layer and
saying the archive cannot be read (and why) — never a raw decompressor or tarfile error."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from compositor import ImageSpec, LayerError, LayerSource, build_image, layer_digest
from compositor.firstboot import publish_layer
from compositor.guestos import LINUX_WANTED, GuestTree, LayerView
from compositor.tarlayer import check_archive

from .layer_builder import directory, file, write_tar

BASE = [directory("etc"), file("etc/os-release", b"ID=test\n")]


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/big")
        data = random.Random(1).randbytes(100_000)  # does not compress
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _corrupt_zstd() -> bytes:
    data = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(_tar_bytes()))
    for i in range(20, 200):
        data[i] ^= 0x5A
    return bytes(data)


CORRUPT = {
    "garbage.tar.zst": b"this is not an archive\n" * 40,
    "zstd-magic.tar.zst": b"\x28\xb5\x2f\xfd" + b"garbage" * 100,
    "damaged.tar.zst": _corrupt_zstd(),
    "truncated.tar.zst": zstandard.ZstdCompressor().compress(_tar_bytes())[:3000],
    "garbage.tar.gz": b"this is not an archive\n" * 40,
    "gzip-magic.tar.gz": b"\x1f\x8b" + b"garbage" * 100,
    "truncated.tar.gz": gzip.compress(_tar_bytes())[:3000],
    "truncated.tar": _tar_bytes()[:3000],
    "empty.tar.gz": b"",
}


def _layer(tmp_path: Path, name: str) -> LayerSource:
    path = tmp_path / name
    path.write_bytes(CORRUPT[name])
    return LayerSource("corrupt-app", "app", path)


def _assert_names_layer(err: LayerError) -> None:
    assert err.layer == "corrupt-app"
    if err.member is not None:  # a plain tar that ends inside a member: that member
        assert err.member == "etc/big"
        assert err.problem == "the archive ends inside this member (its header says 100000 bytes)"
        return
    assert ", member '" not in str(err)  # the archive, not one member
    assert "cannot read the archive: " in str(err)
    assert str(err).split("cannot read the archive: ", 1)[1].strip()  # and why


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_guest_inspection_of_a_corrupt_layer_raises_layer_error(
    tmp_path: Path, name: str
) -> None:
    os_layer = LayerSource("os", "os", write_tar(tmp_path / "os.tar", BASE))
    layers = [os_layer, _layer(tmp_path, name)]
    with pytest.raises(LayerError) as info:
        GuestTree(layers, LINUX_WANTED).exists("sbin/init")
    _assert_names_layer(info.value)
    # what bot.runner.task_steps.image_spec calls before compositing
    with pytest.raises(LayerError) as info:
        publish_layer(layers, "ext4", [], "poweroff")
    _assert_names_layer(info.value)


def test_reading_a_file_from_an_archive_damaged_after_indexing(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "app.tar.zst", [directory("etc"), file("etc/hostname", b"x\n")])
    layer = LayerSource("corrupt-app", "app", path)
    view = LayerView(layer, LINUX_WANTED + LINUX_WANTED.of("etc/hostname"))
    entry = view.find("etc/hostname")
    assert entry is not None
    path.write_bytes(CORRUPT["damaged.tar.zst"])  # the index is cached; the bytes are not
    with pytest.raises(LayerError) as info:
        view.read(entry)
    _assert_names_layer(info.value)


def test_digest_of_a_corrupt_archive_is_its_bytes_hash(tmp_path: Path) -> None:
    """The digest does not decode the archive: a corrupt one gets a digest, no raw error."""
    layer = _layer(tmp_path, "damaged.tar.zst")
    first = layer_digest(layer.source, cache_dir=tmp_path / "cache", layer=layer.name)
    assert first == layer_digest(layer.source, cache_dir=tmp_path / "cache")


def test_digest_of_an_unreadable_layer_raises_layer_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone.tar.zst"
    with pytest.raises(LayerError, match=r"layer 'corrupt-app'.*cannot read the layer"):
        layer_digest(gone, cache_dir=tmp_path / "cache", layer="corrupt-app")
    folder = tmp_path / "dir-layer"
    (folder / "etc").mkdir(parents=True)
    (folder / "etc" / "loop").symlink_to("loop")
    (folder / "etc" / "data").write_bytes(b"x")
    real_open = open

    def failing_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("etc/data"):
            raise OSError(5, "Input/output error", str(path))
        return real_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.open", failing_open)
        with pytest.raises(LayerError, match=r"layer 'dir-layer'.*Input/output error"):
            layer_digest(folder, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name", sorted(CORRUPT))
async def test_build_image_with_a_corrupt_layer_raises_layer_error(
    tmp_path: Path, name: str
) -> None:
    os_layer = LayerSource("os", "os", write_tar(tmp_path / "os.tar", BASE))
    spec = ImageSpec(layers=(os_layer, _layer(tmp_path, name)), size_gib=1, format="raw")
    with pytest.raises(LayerError) as info:
        await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    _assert_names_layer(info.value)
    assert str(info.value).startswith(f"layer 'corrupt-app' ({tmp_path / name})")
    assert info.value.archive == str(tmp_path / name)
    assert not list((tmp_path / "work").iterdir())


# what `layerbot check` runs: every header is read, so damage anywhere is found
@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_check_archive_finds_a_damaged_archive(tmp_path: Path, name: str) -> None:
    with pytest.raises(LayerError) as info:
        check_archive("corrupt-app", _layer(tmp_path, name).source)
    _assert_names_layer(info.value)
    assert str(info.value).startswith(f"layer 'corrupt-app' ({tmp_path / name})")


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
def test_check_archive_accepts_a_good_archive(tmp_path: Path, suffix: str) -> None:
    check_archive("os", write_tar(tmp_path / f"os{suffix}", BASE))
