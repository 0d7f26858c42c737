"""The Debian layer fixture skips for a developer who cannot build it, but fails under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.qemu import conftest


@pytest.fixture
def unbuildable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cached layer, and not root: the layer cannot be built here."""
    monkeypatch.setenv("LAYERBOT_TEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(conftest.subprocess, "run", _no_build)
    return tmp_path / "cache"


def _no_build(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not try to build the layer")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_fails_instead_of_skipping_under_ci(
    unbuildable: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI is set, so the QEMU tests must run"):
        conftest.ensure_debian_os_layer()


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_skips_for_a_developer_without_ci(
    unbuildable: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="needs root and debootstrap"):
        conftest.ensure_debian_os_layer()


def test_root_without_debootstrap_also_fails_under_ci(
    unbuildable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 0)
    monkeypatch.setattr(conftest.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        conftest.ensure_debian_os_layer()


def test_a_cached_layer_is_used_even_under_ci(
    unbuildable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    stamp = conftest.hashlib.sha256(conftest.BUILDER.read_bytes()).hexdigest()[:10]
    layer = unbuildable / f"debian-os-{stamp}.tar.zst"
    unbuildable.mkdir()
    layer.write_bytes(b"cached")
    assert conftest.ensure_debian_os_layer() == layer
