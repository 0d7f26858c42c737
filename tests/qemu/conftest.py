"""Fixtures of the QEMU tests: a real minimal Debian OS layer, built once per machine."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
BUILDER = REPO / "scripts" / "debian_os_layer.py"


def cache_root() -> Path:
    return Path(os.environ.get("LAYERBOT_TEST_CACHE", "~/.cache/layerbot-test")).expanduser()


def in_ci() -> bool:
    """True when the environment variable CI is set (as CI services do: CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def ensure_debian_os_layer() -> Path:
    """The cached Debian OS layer, built first when root. A developer who is not root (or has
    no debootstrap) and has not built it skips the tests that need it; under CI (which runs
    as root, so builds it) that is a failure, never a silent skip."""
    stamp = hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:10]
    layer = cache_root() / f"debian-os-{stamp}.tar.zst"
    if layer.exists():
        return layer
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        why = (f"{layer} is not built yet and building it needs root and debootstrap: "
               f"run `sudo python3 {BUILDER.relative_to(REPO)} {layer}` once")
        if in_ci():
            pytest.fail(f"CI is set, so the QEMU tests must run: {why}", pytrace=False)
        pytest.skip(why)
    layer.parent.mkdir(parents=True, exist_ok=True)
    for old in layer.parent.glob("debian-os-*.tar.zst"):
        old.unlink()
    for attempt in (1, 2):  # one retry: a mirror hiccup should not fail CI
        try:
            subprocess.run([sys.executable, str(BUILDER), str(layer)], check=True, timeout=600)
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if attempt == 2:
                raise
    return layer


@pytest.fixture(scope="session")
def debian_os_layer() -> Path:
    """A .tar.zst Debian OS layer (minbase, systemd, cloud kernel), cached between runs under
    ~/.cache/layerbot-test (or $LAYERBOT_TEST_CACHE); rebuilt when the builder changes."""
    return ensure_debian_os_layer()
