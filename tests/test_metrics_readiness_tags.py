"""/readyz checks the tools of the templates this runner takes (its tags, as its claims), found
from the catalog's configuration alone: no adapter is created for it (no session, no SDK)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import adapters
from bot.catalog import Catalog, load_catalog
from bot.metrics.health import tools_for
from bot.runner.job_runner import JobRunner
from bot.store.task_store import TaskStore
from compositor import tools
from tests.conftest import BASIC_CATALOG
from tests.metrics_ops import get_json

NTFS_TOOLS = {"mkntfs", "wimlib-imagex", "ntfslabel", "faketime"}

#: an untagged Linux template, a Windows (NTFS) template on a connector tagged "windows", and a
#: Google Cloud template (gce-tar: tar) on one tagged "gce"
MIXED = BASIC_CATALOG.replace("connectors:\n", """connectors:
  windows-folder:
    type: local
    path: ./published-windows
    format: vhdx
    runner_tags: [windows]
  gce:
    type: gcp
    project: my-project-1
    zone: us-central1-a
    bucket: my-bucket
    runner_tags: [gce]
""", 1).replace("runner:\n", """  win-ntfs:
    os_layer: base-os
    platform_layer: vda
    connector: windows-folder
    disk: {size_gib: 1, filesystem: ntfs}
  cloud:
    os_layer: base-os
    platform_layer: vda
    connector: gce
    disk: {size_gib: 1}
runner:
""", 1)


@pytest.fixture
def mixed(write_catalog: Callable[[str], Path]) -> Catalog:
    return load_catalog(write_catalog(MIXED))


def names(catalog: Catalog, tags: set[str]) -> set[str]:
    return {t.name for t in tools_for(catalog, tags)}


def test_the_tools_are_those_of_the_connectors_the_tags_take(mixed: Catalog) -> None:
    untagged = names(mixed, set())
    assert {"mke2fs", "qemu-img"} <= untagged
    assert not untagged & (NTFS_TOOLS | {"tar"})
    assert names(mixed, {"windows"}) >= NTFS_TOOLS
    assert "tar" not in names(mixed, {"windows"})
    assert "tar" in names(mixed, {"gce"}) and not names(mixed, {"gce"}) & NTFS_TOOLS


async def test_a_linux_runner_is_ready_without_the_ntfs_tools(
        mixed: Catalog, store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.metrics.http import ops_endpoints

    found = tools.find_tool
    monkeypatch.setattr("compositor.tools.find_tool", lambda n: None if n in NTFS_TOOLS else found(n))
    monkeypatch.setattr("bot.metrics.health.find_tool", tools.find_tool)
    created: list[str] = []
    create = adapters.create

    def counting_create(config: adapters.ConnectorConfig, clients: object | None = None) -> adapters.Adapter:
        created.append(config.type)
        return create(config, clients)

    monkeypatch.setattr(adapters, "create", counting_create)
    async with ops_endpoints(store, mixed, JobRunner(store, mixed), "127.0.0.1", 0) as port:
        assert await get_json(port, "/readyz") == (
            200, {"ready": True, "checks": {"store": "ok", "catalog": "ok", "tools": "ok"}})
    async with ops_endpoints(store, mixed, JobRunner(store, mixed, tags=["windows"]), "127.0.0.1", 0) as port:
        status, body = await get_json(port, "/readyz")
        assert status == 503
        assert set(body["checks"]["tools"]["missing"]) == NTFS_TOOLS
    assert created == []  # readiness made no adapter


def test_every_built_in_adapter_says_its_format_from_its_configuration() -> None:
    for type_name in ("local", "qemu", "vsphere", "azure", "azure-mcs", "gcp", "nutanix", "hyperv",
                      "xenserver", "pvs"):
        assert callable(getattr(adapters.adapter_class(type_name), "format_for", None)), type_name
