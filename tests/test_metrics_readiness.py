"""``/readyz``: 200 when the store answers, the catalog is loaded and the tools are found; 503
with a terse JSON body naming what is not ready otherwise (short codes: serve answers it on its
public port), the details in the log. (PostgreSQL going away:
tests/store/test_metrics_postgres.py.)"""

from __future__ import annotations

import json
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
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
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
    assert set(missing) == {"missing"}
    assert {"mke2fs", "qemu-img"} <= set(missing["missing"])
    [logged] = [r.getMessage() for r in caplog.records if "tools missing" in r.getMessage()]
    assert "sudo apt-get install -y " in logged
    assert "qemu-utils" in logged and "e2fsprogs" in logged


async def test_not_ready_when_the_store_does_not_answer(catalog: Catalog, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    location = tmp_path / "state" / "gone.db"
    location.parent.mkdir()
    store = TaskStore(location)
    async with ops_server(store, catalog) as port:
        store.close()
        status, body = await get_json(port, "/readyz")
        assert status == 503
        assert body == {"ready": False, "checks": {"store": "unreachable", "catalog": "ok", "tools": "ok"}}
        # the body never says where the database is; the log does, once however often it is asked
        assert await get_json(port, "/readyz") == (status, body)
        # /metrics still answers, and says the store did not
        samples = await scrape(port)
    assert str(tmp_path) not in json.dumps(body) and "gone.db" not in json.dumps(body)
    logged = [r.getMessage() for r in caplog.records if "readiness: the task database" in r.getMessage()]
    assert len(logged) == 1 and str(location) in logged[0], logged
    assert value(samples, "layerbot_store_up") == 0
    assert not any(name == "layerbot_tasks" for name, _ in samples)
