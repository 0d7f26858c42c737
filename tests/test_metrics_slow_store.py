"""A task database that takes seconds to count the tasks: scrapes wait on threads of their own
(never the default pool the tasks' work runs on), concurrent scrapes ask the database once, and
a scrape that cannot get the counts in time reports ``layerbot_store_up 0``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot import metrics
from bot.catalog import Catalog
from bot.metrics.collectors import STORE_READ_TIMEOUT
from bot.store.task_store import TaskStore
from tests.metrics_ops import get_json, ops_server
from tests.metrics_scrape import scrape, value

SCRAPES = 8
#: the default pool of this test's loop: fewer threads than concurrent scrapes
POOL = 4


class SlowCountStore(TaskStore):
    """Counting blocks until released (at most 30 s), like a store whose lock a commit holds."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.count_calls = 0

    def count_by_status(self) -> list[tuple[str, str, int]]:
        self.count_calls += 1
        self.release.wait(30)
        return super().count_by_status()


@pytest.fixture
def slow_store(tmp_path: Path) -> Iterator[SlowCountStore]:
    store = SlowCountStore(tmp_path / "layerbot.db")
    yield store
    store.release.set()
    store.close()


async def test_slow_counts_hold_no_shared_thread_and_are_asked_once(
        catalog: Catalog, slow_store: SlowCountStore) -> None:
    metrics.reset()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(POOL, thread_name_prefix="test-default")
    loop.set_default_executor(pool)
    async with ops_server(slow_store, catalog) as port:
        scrapes = [asyncio.create_task(scrape(port)) for _ in range(SCRAPES)]
        await asyncio.sleep(0.3)  # every scrape has reached the server and waits on the store
        # the tasks' work still gets the default pool, and the process still answers
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "worked"), 1.0) == "worked"
        assert await asyncio.wait_for(get_json(port, "/healthz"), 1.0) == (200, {"ok": True})
        results = await asyncio.wait_for(asyncio.gather(*scrapes), STORE_READ_TIMEOUT + 10)
        assert all(value(samples, "layerbot_store_up") == 0 for samples in results)
        assert slow_store.count_calls == 1
        slow_store.release.set()
        await asyncio.sleep(0.1)
        assert value(await scrape(port), "layerbot_store_up") == 1
    pool.shutdown(wait=False)
