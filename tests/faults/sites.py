"""A layerbot installation for the resource-fault tests, and how they take a resource away from
its runner without root: mounts in a user and mount namespace of the runner's own (``unshare
--user --map-root-user --mount``; any user may mount a tmpfs or a read-only bind mount there).
A size-limited tmpfs gives the kernel's own ENOSPC, a read-only bind mount a folder nobody can
write (file modes would not do: the tests may run as root, whom they do not stop)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from compositor.sweep import BUILD_PREFIX, DIGEST_TEMP_PREFIX

LAYERBOT = str(Path(sys.executable).parent / "layerbot")


def site(root: Path, *, fmt: str = "qcow2", lease_seconds: float = 3) -> Path:
    """Catalog, layers, an empty cache and work dir; template ``desk`` on a local folder.
    Returns the catalog's path."""
    (root / "layers" / "office" / "opt" / "office").mkdir(parents=True)
    (root / "layers" / "office" / "opt" / "office" / "README").write_text("office\n")
    os_release = root / "os-release"
    os_release.write_text("ID=base\n")
    with tarfile.open(root / "layers" / "os.tar", "w") as tar:
        tar.add(os_release, "etc/os-release")
    os_release.unlink()
    for folder in ("cache", "work"):
        (root / folder).mkdir()
    (root / "layerbot.yml").write_text(textwrap.dedent(f"""\
        layers:
          base-os: {{kind: os, source: layers/os.tar}}
          office: {{kind: app, source: layers/office}}
        connectors:
          folder: {{type: local, path: ./published, format: {fmt}}}
        templates:
          desk: {{os_layer: base-os, app_layers: [office], connector: folder, disk: {{size_gib: 1}}}}
        runner: {{max_parallel: 1, lease_seconds: {lease_seconds}, cache_dir: cache, work_dir: work,
                  ram_scratch: false}}
        """))
    return root / "layerbot.yml"


def layerbot(root: Path, *args: str) -> list[str]:
    return [LAYERBOT, "--config", str(root / "layerbot.yml"), "--db", str(root / "layerbot.db"), *args]


def in_namespace(root: Path, mounts: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run argv after the shell commands ``mounts`` (``$R`` is ``root``), in a user and mount
    namespace of its own; what the run left in ``root/cache`` is copied to ``root/cache-after``
    (a tmpfs there ends with the namespace)."""
    script = (f'R="$0"; {{ {mounts}; }} || exit 99; "$@"; rc=$?; cp -a "$R/cache" "$R/cache-after"; exit $rc')
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
                           str(root), *argv], capture_output=True, text=True, timeout=120)
    if done.returncode == 99:
        pytest.fail(f"cannot mount in a user namespace here: {done.stderr}", pytrace=False)
    return done


def with_small_cache(root: Path, size: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """argv with ``root/cache`` a tmpfs of ``size`` (mount's notation, e.g. 1m)."""
    return in_namespace(root, f'mount -t tmpfs -o size={size} layerbot-cache "$R/cache"', argv)


def with_read_only(root: Path, folder: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """argv with ``root/folder`` read-only (a read-only bind mount of it on itself: file modes
    would not stop root, and the tests may run as root)."""
    return in_namespace(root, f'mount --bind "$R/{folder}" "$R/{folder}" && '
                              f'mount -o remount,bind,ro "$R/{folder}"', argv)


def temp_files(cache: Path, work: Path) -> list[Path]:
    """Temp files and build dirs a runner leaves in a cache and work dir when it fails."""
    return sorted([*(cache / "tmp").glob("*"), *(cache / "digests").glob(f"{DIGEST_TEMP_PREFIX}*"),
                   *work.glob(f"{BUILD_PREFIX}*")])
