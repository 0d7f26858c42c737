"""A layerbot installation for the resource-fault tests, and the ways they take a resource
away from its runner without root: a size-limited filesystem in a user and mount namespace
(``unshare --user --map-root-user --mount``: any user may mount a tmpfs there, and its ENOSPC
is the kernel's, not a simulation) and an unprivileged user for permissions (root ignores
file modes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from compositor.sweep import BUILD_PREFIX, DIGEST_TEMP_PREFIX

LAYERBOT = str(Path(sys.executable).parent / "layerbot")
NOBODY = 65534


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


def with_small_cache(root: Path, size: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run argv with ``root/cache`` a tmpfs of ``size`` (mount's notation, e.g. 1m); what the
    run left in it is copied to ``root/cache-after`` (the tmpfs ends with the namespace)."""
    script = ('mount -t tmpfs -o size="$1" layerbot-cache "$2/cache" || exit 99; shift 2; "$@"; rc=$?; '
              'cp -a "$0/cache" "$0/cache-after"; exit $rc')
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
                           str(root), size, str(root), *argv],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 99:
        pytest.fail(f"cannot mount a tmpfs in a user namespace here: {done.stderr}", pytrace=False)
    return done


def as_nobody(root: Path, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run argv as an unprivileged user owning ``root`` (when the tests run as root, whom file
    modes do not stop); ``root`` must be reachable by that user."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        for path in (root, *root.rglob("*")):
            os.lchown(path, NOBODY, NOBODY)
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(root)})


def temp_files(cache: Path, work: Path) -> list[Path]:
    """Temp files and build dirs a runner leaves in a cache and work dir when it fails."""
    return sorted([*(cache / "tmp").glob("*"), *(cache / "digests").glob(f"{DIGEST_TEMP_PREFIX}*"),
                   *work.glob(f"{BUILD_PREFIX}*")])
