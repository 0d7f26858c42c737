"""Layer priority, whiteouts (both orders, opaque directories), directory layers, compressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from compositor import ExtraFile, ImageSpec, LayerSource, build_image

from .layer_builder import cat, directory, file, ls, stat, symlink, write_tar


@pytest.fixture
async def merged_image(tmp_path: Path) -> Path:
    os_layer = write_tar(tmp_path / "os.tar.gz", [
        directory("etc"),
        file("etc/hostname", b"os\n"),
        file("etc/motd", b"os motd\n"),
        file("etc/removed", b"gone\n"),
        file("etc/later-removed", b"gone too\n"),
        directory("opt"),
        directory("opt/cache"),
        file("opt/cache/old1", b"1"),
        directory("opt/cache/sub"),
        file("opt/cache/sub/old2", b"2"),
        directory("srv"),
        file("srv/keep", b"keep"),
        directory("var/lib/dir-removed"),
        file("var/lib/dir-removed/x", b"x"),
    ])
    app1 = write_tar(tmp_path / "app1.tar.zst", [
        file("etc/.wh.removed"),  # whiteout before the entries
        file("etc/motd", b"app1 motd\n"),
        directory("opt/cache"),
        file("opt/cache/new", b"new"),
        file("opt/cache/.wh..wh..opq"),  # opaque marker after the layer's own entry
        file("var/lib/.wh.dir-removed"),
        file("etc/app1", b"app1\n"),
    ])
    app2 = tmp_path / "app2"
    (app2 / "etc").mkdir(parents=True)
    (app2 / "etc/motd").write_bytes(b"app2 motd\n")
    (app2 / "etc/.wh.later-removed").touch()
    (app2 / "srv").mkdir()
    (app2 / "srv/from-dir").write_bytes(b"dir layer")
    platform = write_tar(tmp_path / "platform.tar", [
        file("etc/hostname", b"platform\n"),
        file("etc/app1", b"platform app1\n"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        file("etc/.wh.app1"),  # a whiteout never removes the layer's own entry
    ])
    spec = ImageSpec(
        layers=(
            LayerSource("os", "os", os_layer),
            LayerSource("app1", "app", app1),
            LayerSource("app2", "app", app2),
            LayerSource("platform", "platform", platform),
        ),
        size_gib=1,
        format="raw",
        extra_files=(ExtraFile("/etc/hostname", b"publish\n", 0o600),),
        extra_symlinks=(("/usr/bin/firstboot", "/usr/lib/layerbot/firstboot"),),
    )
    built = await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    return built.path


async def test_higher_layer_wins(merged_image: Path) -> None:
    assert cat(merged_image, "/etc/motd") == b"app2 motd\n"
    assert cat(merged_image, "/etc/app1") == b"platform app1\n"
    assert cat(merged_image, "/srv/from-dir") == b"dir layer"
    assert cat(merged_image, "/srv/keep") == b"keep"


async def test_publish_layer_is_highest(merged_image: Path) -> None:
    assert cat(merged_image, "/etc/hostname") == b"publish\n"
    hostname = stat(merged_image, "/etc/hostname")
    assert hostname is not None and hostname.mode == 0o600
    link = stat(merged_image, "/usr/bin/firstboot")
    assert link is not None and link.type == "symlink"
    assert "/usr/lib/layerbot/firstboot" in link.text


async def test_whiteouts_delete_lower_entries(merged_image: Path) -> None:
    etc = ls(merged_image, "/etc")
    assert "removed" not in etc and "later-removed" not in etc
    assert "dir-removed" not in ls(merged_image, "/var/lib")
    assert not [name for name in etc if name.startswith(".wh.")]


async def test_opaque_directory_hides_lower_children(merged_image: Path) -> None:
    assert sorted(ls(merged_image, "/opt/cache")) == ["new"]


async def test_no_whiteout_marker_reaches_the_image(merged_image: Path) -> None:
    for folder in ("/etc", "/opt/cache", "/var/lib", "/srv"):
        assert not [n for n in ls(merged_image, folder) if n.startswith(".wh.")]
