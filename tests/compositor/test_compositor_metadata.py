"""Owners, modes, links, device nodes and mtimes survive — built as an ordinary (non-root) user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .layer_builder import MTIME, OFFSET, chardev, directory, file, hardlink, stat, symlink, write_tar

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]

_BUILD_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from compositor import ImageSpec, LayerSource, build_image
root = Path(sys.argv[1])
spec = ImageSpec(
    layers=(LayerSource("os", "os", root / "os.tar.gz"), LayerSource("app", "app", root / "app.tar")),
    size_gib=1, format="raw")
built = asyncio.run(build_image(spec, work_dir=root / "work", cache_dir=root / "cache"))
print(json.dumps({"path": str(built.path)}))
"""


@pytest.fixture(scope="module")
def rootless_image() -> Iterator[Path]:
    """The image, built by uid 65534 when the tests run as root (as in CI)."""
    folder = Path(tempfile.mkdtemp(prefix="layerbot-rootless-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        write_tar(folder / "os.tar.gz", [
            directory("bin"),
            file("bin/su", b"\x7fELF su", mode=0o4755),
            file("bin/wall", b"\x7fELF wall", mode=0o2755, gid=5),
            directory("dev"),
            chardev("dev/console", 5, 1, mode=0o600),
            chardev("dev/null", 1, 3),
            directory("home"),
            directory("home/alice", mode=0o700, uid=1000, gid=1000),
            file("home/alice/notes", b"hi", mode=0o640, uid=1000, gid=1000),
            directory("tmp", mode=0o1777),
            directory("usr/lib", mode=0o755),
            file("usr/lib/libc.so.6", b"libc", mode=0o755),
            hardlink("usr/lib/libc-same.so", "usr/lib/libc.so.6"),
            symlink("lib", "usr/lib"),
            symlink("etc-abs", "/etc/host-only-path"),
        ])
        write_tar(folder / "app.tar", [
            directory("srv/www", mode=0o750, uid=33, gid=33),
            file("srv/www/index.html", b"<h1>", mode=0o644, uid=33, gid=33),
            symlink("srv/www/passwd", "/etc/passwd"),
        ])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-c", _BUILD_SCRIPT, str(folder)]
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
            for child in folder.iterdir():
                os.chown(child, NOBODY, NOBODY)
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to test the rootless path"
            argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        path = Path(json.loads(done.stdout.strip().splitlines()[-1])["path"])
        if os.geteuid() == 0:
            assert path.stat().st_uid == NOBODY
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_owner_and_mode(rootless_image: Path) -> None:
    notes = stat(rootless_image, "/home/alice/notes")
    assert notes and (notes.uid, notes.gid, notes.mode) == (1000, 1000, 0o640)
    alice = stat(rootless_image, "/home/alice")
    assert alice and (alice.uid, alice.gid, alice.mode) == (1000, 1000, 0o700)
    www = stat(rootless_image, "/srv/www")
    assert www and (www.uid, www.gid, www.mode) == (33, 33, 0o750)
    libc = stat(rootless_image, "/usr/lib/libc.so.6")
    assert libc and (libc.uid, libc.gid, libc.mode) == (0, 0, 0o755)


def test_special_mode_bits(rootless_image: Path) -> None:
    su = stat(rootless_image, "/bin/su")
    wall = stat(rootless_image, "/bin/wall")
    tmp = stat(rootless_image, "/tmp")
    assert su and su.mode == 0o4755 and su.uid == 0
    assert wall and wall.mode == 0o2755 and wall.gid == 5
    assert tmp and tmp.mode == 0o1777


def test_device_nodes(rootless_image: Path) -> None:
    console = stat(rootless_image, "/dev/console")
    null = stat(rootless_image, "/dev/null")
    assert console and console.type == "character special" and console.mode == 0o600
    assert "Device major/minor number: 05:01" in console.text
    assert null and "Device major/minor number: 01:03" in null.text


def test_symlinks_are_data(rootless_image: Path) -> None:
    lib = stat(rootless_image, "/lib")
    assert lib and lib.type == "symlink" and 'Fast link dest: "usr/lib"' in lib.text
    absolute = stat(rootless_image, "/etc-abs")
    assert absolute and 'Fast link dest: "/etc/host-only-path"' in absolute.text
    passwd = stat(rootless_image, "/srv/www/passwd")
    assert passwd and passwd.type == "symlink"


def test_hard_links(rootless_image: Path) -> None:
    a = stat(rootless_image, "/usr/lib/libc.so.6")
    b = stat(rootless_image, "/usr/lib/libc-same.so")
    assert a and b and a.inode == b.inode and a.links == 2


def test_mtimes(rootless_image: Path) -> None:
    for path in ("/bin/su", "/home/alice", "/srv/www/index.html", "/lib", "/usr/lib"):
        entry = stat(rootless_image, path)
        assert entry and entry.mtime == MTIME, path


def test_filesystem_is_clean(rootless_image: Path) -> None:
    done = subprocess.run(
        ["e2fsck", "-fn", f"{rootless_image}?offset={OFFSET}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
