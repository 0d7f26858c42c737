"""Paths built from catalog names stay inside the target folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.base import PlatformError, publish
from adapters.local import Adapter as LocalAdapter
from adapters.local import Config as LocalConfig
from adapters.qemu import Adapter as QemuAdapter
from adapters.qemu import Config as QemuConfig
from compositor.paths import UnsafePath, join_inside
from tests.test_local_adapter import context


@pytest.mark.parametrize("names", [("..",), ("../../escape-tpl",), ("/etc",), (".",), ("",),
                                   ("a/b",), ("tpl", "../../x.qcow2"), ("a\0b",)])
def test_names_that_are_not_one_plain_component_are_refused(tmp_path: Path,
                                                             names: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePath):
        join_inside(tmp_path, *names)


def test_a_symlink_under_the_base_cannot_lead_out(tmp_path: Path) -> None:
    base = tmp_path / "published"
    base.mkdir()
    (base / "tpl").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="leads outside"):
        join_inside(base, "tpl", "t1.qcow2")


def test_a_base_that_is_a_symlink_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert join_inside(tmp_path / "link", "tpl", "t1.qcow2") == tmp_path / "link" / "tpl" / "t1.qcow2"


async def test_local_publish_of_an_escaping_template_writes_nothing(tmp_path: Path) -> None:
    artifact = tmp_path / "disk.img"
    artifact.write_bytes(b"disk")
    adapter = LocalAdapter(LocalConfig(type="local", path=tmp_path / "out" / "published"))
    ctx = context(tmp_path, artifact)
    ctx.template = "../../escape-tpl"
    with pytest.raises(PlatformError, match=re.escape("refusing to publish template '../../escape-tpl'")):
        await publish(adapter, ctx)
    assert not (tmp_path / "escape-tpl").exists() and not (tmp_path / "out").exists()


def test_qemu_vm_dir_stays_inside_its_path(tmp_path: Path) -> None:
    adapter = QemuAdapter(QemuConfig(type="qemu", path=tmp_path / "vms"))
    assert adapter.vm_dir("tpl-1") == tmp_path / "vms" / "tpl-1"
    for name in ("../escape-1", "."):
        with pytest.raises(PlatformError, match="refusing to create VM"):
            adapter.vm_dir(name)
