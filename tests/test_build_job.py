"""build_job reads everything a task row holds before it makes the task's adapter: a row it
cannot read leaves no adapter, so no session, open."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from adapters.blocking import SessionPool
from adapters.resources import ResourceError
from adapters.vsphere import Clients
from bot.catalog import Catalog, load_catalog
from bot.runner.task_steps import build_job
from bot.store.task_store import TaskStore
from tests.conftest import BASIC_CATALOG
from tests.test_runner import queue
from tests.vsphere.simulator import PASSWORD, PASSWORD_ENV, USER, USER_ENV


def vsphere_catalog(catalog_dir: Path) -> Catalog:
    settings = {"type": "vsphere", "host": "127.0.0.1", "port": 9, "user_env": USER_ENV,
                "password_env": PASSWORD_ENV, "insecure": True, "datacenter": "DC0",
                "cluster": "DC0_C0", "datastore": "LocalDS_0", "scripts": ["scripts/setup.sh"]}
    text = BASIC_CATALOG.replace("connectors:\n", f"connectors:\n  lab: {json.dumps(settings)}\n", 1)
    path = catalog_dir / "layerbot.yml"
    path.write_text(text.replace("connector: folder", "connector: lab"))
    return load_catalog(path)


async def test_a_bad_published_row_leaves_no_session_open(catalog_dir: Path, store: TaskStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    catalog = vsphere_catalog(catalog_dir)
    task = store.get(queue(store, catalog))
    clients = Clients(sessions=SessionPool())
    adapter = build_job(task, store, "runner-1", catalog, clients={"vsphere": clients}).adapter
    assert len(clients.sessions.shared()) == 1  # a readable row: the adapter holds a session
    await adapter.close()

    clients = Clients(sessions=SessionPool())
    bad = dataclasses.replace(task, published={"link": "x", "summary": "y",
                                               "resource": {"kind": "no.such.kind"}})
    with pytest.raises(ResourceError, match=f"task {task.id}"):
        build_job(bad, store, "runner-1", catalog, clients={"vsphere": clients})
    assert clients.sessions.shared() == []
