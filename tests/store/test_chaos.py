"""Chaos: three `layerbot worker` processes ("machines": own catalogs, cache and work dirs) on
one PostgreSQL database over 30 local-target tasks, a random worker SIGKILLed and restarted
50 times at random (seeded) moments. Afterwards no task is lost or done twice, no temp file is
left and every lease is released."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from bot.catalog import load_catalog
from bot.runner.planning import enqueue, plan
from bot.store.backends import open_store
from tests.store.workers import (
    done_once,
    leftover_temp_files,
    machine,
    start_worker,
    stop_workers,
    wait_finished,
)

TASKS, KILLS, SEED = 30, 50, 14


def test_three_workers_killed_50_times_lose_nothing_and_do_nothing_twice(
    pg_url: str, catalog_dir: Path, tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    published = tmp_path / "published"
    # short leases: a killed worker's tasks are taken over soon; attempts are not what is tested
    roots = [tmp_path / name for name in ("m1", "m2", "m3")]
    configs = [machine(root, catalog_dir / "layers", published, lease_seconds=2, max_attempts=100)
               for root in roots]
    store = open_store(pg_url)
    catalog = load_catalog(configs[0])
    ids = [enqueue(store, plan(catalog, "plain", check_cache=False), requested_by="alice")[0].id
           for _ in range(TASKS)]
    logs = [root / "worker.log" for root in roots]
    workers = [start_worker(c, pg_url, log) for c, log in zip(configs, logs, strict=True)]
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = start_worker(configs[victim], pg_url, logs[victim])
        done_during_kills = sum(store.get(i).finished for i in ids)
        wait_finished(store, ids, 240, workers)
    finally:
        codes = stop_workers(workers)
    assert codes == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
    counts = done_once(store, ids, published)
    leftovers = [p for root in roots for p in leftover_temp_files(root)]
    assert leftovers == []
    print(f"chaos: {KILLS} kills, {done_during_kills} tasks finished while killing, "
          f"{time.monotonic() - started:.0f} s; {counts}, leftover temp files: {len(leftovers)}")
    store.close()
