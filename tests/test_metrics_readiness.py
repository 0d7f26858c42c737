"""``/readyz``: 200 when the store answers, the catalog is loaded and the tools are found; 503
with a JSON body naming what is not ready otherwise. (PostgreSQL going away:
tests/store/test_metrics_postgres.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.catalog import Catalog
from bot.store.task_store import TaskStore
from tests.metrics_ops import get_json, ops_server
from tests.metrics_scrape import scrape, value


async def test_ready_when_store_catalog_and_tools_are_there(catalog: Catalog, store: TaskStore) -> None:
    async with ops_server(store, catalog) as port:
        assert await get_json(port, "/readyz") == (
            200, {"ready": True, "checks": {"store": "ok", "catalog": "ok", "tools": "ok"}})
        assert await get_json(port, "/healthz") == (200, {"ok": True})


async def test_not_ready_names_the_missing_tools(catalog: Catalog, store: TaskStore, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async with ops_server(store, catalog) as port:
        # the tools are uninstalled while the process runs: nothing on the PATH has them
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        monkeypatch.setattr("compositor.tools._EXTRA_DIRS", ())
        status, body = await get_json(port, "/readyz")
    assert status == 503
    assert body["ready"] is False
    assert body["checks"]["store"] == body["checks"]["catalog"] == "ok"
    missing = body["checks"]["tools"]
    assert {"mke2fs", "qemu-img"} <= set(missing["missing"])
    assert missing["install"].startswith("sudo apt-get install -y ")
    assert "qemu-utils" in missing["install"] and "e2fsprogs" in missing["install"]


async def test_not_ready_when_the_store_does_not_answer(catalog: Catalog, tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "gone.db")
    async with ops_server(store, catalog) as port:
        store.close()
        status, body = await get_json(port, "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert body["checks"]["store"].startswith("the task database is unreachable: ")
        assert body["checks"]["tools"] == "ok"
        # /metrics still answers, and says the store did not
        samples = await scrape(port)
    assert value(samples, "layerbot_store_up") == 0
    assert not any(name == "layerbot_tasks" for name, _ in samples)
