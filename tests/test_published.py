"""Published.resource is a typed resource in the store's JSON; rows written before (a dict)
stay readable through each adapter's legacy reader; a row that cannot be read is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import Published
from adapters.local import Adapter as LocalAdapter
from adapters.local import LocalFile
from adapters.qemu import Adapter as QemuAdapter
from adapters.qemu import QemuVm
from adapters.resources import ResourceError
from adapters.vsphere import Adapter as VSphereAdapter
from adapters.vsphere import VSpherePublished


def through_the_store(published: Published) -> Published:
    return Published.from_json(json.loads(json.dumps(published.to_json())))


def test_the_published_resource_comes_back_typed(tmp_path: Path) -> None:
    vm = VSpherePublished(moref="vm-42", name="win10", mode="template",
                          since=datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC), published_at=1.5,
                          vcenter="uuid-1")
    for resource in (vm, QemuVm(vm_dir=tmp_path / "debian", task_id="t1"),
                     LocalFile(path=tmp_path / "t1.qcow2", identity=(12, 34))):
        back = through_the_store(Published(link="x", summary="y", resource=resource))
        assert back.resource == resource and type(back.resource) is type(resource)
    assert through_the_store(Published(link="x", summary="y")).resource is None
    assert through_the_store(Published(link="x", summary="y", resource=vm)).expect(
        VSpherePublished).since == vm.since


def test_rows_written_before_the_resource_was_typed_are_read_by_the_adapter(
        tmp_path: Path) -> None:
    def old(resource: dict[str, object], adapter: type) -> Published:
        return Published.from_json({"link": "x", "summary": "y", "resource": resource},
                                   where="task t1", legacy=adapter.legacy_published)

    qemu = old({"vm_dir": str(tmp_path / "vm"), "name": "vm", "task_id": "t1",
                "launcher": str(tmp_path / "vm" / "start.sh")}, QemuAdapter)
    assert qemu.resource == QemuVm(vm_dir=tmp_path / "vm", task_id="t1")
    local = old({"file": str(tmp_path / "t1.img")}, LocalAdapter)
    assert local.resource == LocalFile(path=tmp_path / "t1.img")
    vsphere = old({"vm": "vm-7", "vm_name": "win10", "mode": "vm",
                   "since": "2026-11-26T01:02:03+00:00", "published_at": 10.0,
                   "vcenter": "uuid"}, VSphereAdapter)
    assert vsphere.resource == VSpherePublished(
        moref="vm-7", name="win10", mode="vm", since=datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC),
        published_at=10.0, vcenter="uuid")
    assert old({}, QemuAdapter).resource is None  # a row without a resource


def test_a_published_resource_that_cannot_be_read_is_named() -> None:
    with pytest.raises(ResourceError, match=r"task t9: published.resource: .*unknown resource "
                                            r"kind 'azure.blob'"):
        Published.from_json({"link": "x", "summary": "y",
                             "resource": {"kind": "azure.blob", "url": "u"}}, where="task t9")
    with pytest.raises(ResourceError, match=r"task t9: published.resource: the adapter cannot"):
        Published.from_json({"link": "x", "summary": "y", "resource": {"vm": "vm-1"}},
                            where="task t9")
