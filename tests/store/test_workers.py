"""Two ``layerbot worker`` processes ("machines": separate catalogs and cache dirs) on one
PostgreSQL database over tasks on the local target: each task done once, every lease released,
and runner tags route the tagged connector's tasks to the worker having the tag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.catalog import load_catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.backends import open_store
from bot.store.states import EventKind

from .workers import machine

LAYERBOT = str(Path(sys.executable).parent / "layerbot")



def test_two_workers_do_each_task_once_and_tags_route_tasks(
    pg_url: str, catalog_dir: Path, tmp_path: Path,
) -> None:
    published = tmp_path / "published"
    configs = [machine(tmp_path / m, catalog_dir / "layers", published) for m in ("east", "west")]
    store = open_store(pg_url)
    catalog = load_catalog(configs[0])
    names = ["plain"] * 6 + ["eastern"] * 4
    ids = [enqueue(store, plan(catalog, n, check_cache=False), requested_by="alice")[0].id for n in names]
    workers = [
        subprocess.Popen([LAYERBOT, "--config", str(config), "--db", pg_url, "worker", *tags],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        for config, tags in zip(configs, (["--tags", "dc-east"], []), strict=True)
    ]
    try:
        deadline = time.monotonic() + 240
        while not all(store.get(i).finished for i in ids):
            assert all(w.poll() is None for w in workers), "a worker exited"
            assert time.monotonic() < deadline, [store.get(i).status for i in ids]
            time.sleep(0.2)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
        outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    east_pid, west_pid = (str(w.pid) for w in workers)

    tasks = {i: store.get(i) for i in ids}
    assert [t.status for t in tasks.values()] == [states.DONE] * len(ids)
    assert all(t.lease_owner is None for t in tasks.values())  # every lease released
    done_by: dict[str, str] = {}
    for task_id in ids:
        done = [e for e in store.events(task_id) if e.kind == EventKind.DONE]
        assert len(done) == 1, (task_id, done)
        done_by[task_id] = done[0].data["runner"].split(":")[1]  # host:pid:stamp
    artifacts = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    assert artifacts == sorted(f"{tasks[i].template}/{i}.img" for i in ids)
    # the tagged connector's tasks only on the worker with the tag; the untagged on either
    assert {done_by[i] for i in ids if tasks[i].template == "eastern"} == {east_pid}
    assert set(done_by.values()) <= {east_pid, west_pid}
    runs = {name: sum(1 for v in done_by.values() if v == pid)
            for name, pid in (("east", east_pid), ("west", west_pid))}
    print("tasks done per worker (east: tagged, west: untagged):", json.dumps(runs))
    store.close()
