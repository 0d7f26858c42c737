"""Wake-ups: on PostgreSQL an idle runner claims a queued task on its NOTIFY, not on its next
poll, and follow() reads a new event at once; SQLite keeps polling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.catalog import Catalog
from bot.runner.job_runner import JobRunner
from bot.store.backends import open_store
from bot.store.events import follow
from bot.store.interface import Store
from bot.store.states import EventKind

#: far longer than any bound below: a claim within the bound came from a notice
LONG_POLL = 30.0


def queue(store: Store, key: str) -> str:
    task, _ = store.create_task(template="win10-office", connector="folder", platform="Local folder",
                                image_name=key, requested_by="alice", message="queued", idempotency_key=key)
    return task.id


async def enqueue_to_claim(location: str, catalog: Catalog, poll_interval: float) -> float:
    """Seconds from the start of an enqueue (another connection) to the idle runner's claim."""
    runner_store, client = open_store(location), open_store(location)
    runner = JobRunner(runner_store, catalog, poll_interval=poll_interval)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop=stop))
    try:
        await asyncio.wait_for(runner.listening.wait(), 10)
        await asyncio.sleep(0.2)  # the first (empty) claim round is over: the runner is idle
        started = time.monotonic()
        task_id = await asyncio.to_thread(queue, client, "k1")
        while (await asyncio.to_thread(client.get, task_id)).lease_owner is None:
            if time.monotonic() - started > 10:
                raise AssertionError("the runner did not claim the queued task within 10 s")
            await asyncio.sleep(0.002)
        return time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        runner_store.close()
        client.close()


def test_an_idle_postgres_worker_claims_a_queued_task_on_its_notify(pg_url: str, catalog: Catalog) -> None:
    latency = asyncio.run(enqueue_to_claim(pg_url, catalog, LONG_POLL))
    print(f"enqueue-to-claim on PostgreSQL, idle runner polling every {LONG_POLL:.0f} s: "
          f"{latency * 1000:.1f} ms")
    assert latency < 1.0


def test_sqlite_keeps_polling(tmp_path: Path, catalog: Catalog) -> None:
    # no notifications: the claim waits for the next poll, and still comes
    latency = asyncio.run(enqueue_to_claim(str(tmp_path / "tasks.db"), catalog, 1.5))
    assert 0.3 < latency < 5.0


def test_follow_reads_a_new_postgres_event_on_its_notify(pg_url: str) -> None:
    async def first_event_after_queue() -> float:
        store, writer = open_store(pg_url), open_store(pg_url)
        stop = asyncio.Event()
        try:
            events = follow(store, poll_interval=LONG_POLL, stop=stop)
            reading = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.5)  # the first (empty) read is over and LISTEN is on
            started = time.monotonic()
            await asyncio.to_thread(queue, writer, "k1")
            event = await asyncio.wait_for(reading, 10)
            assert event.kind == "created"
            await events.aclose()
            return time.monotonic() - started
        finally:
            store.close()
            writer.close()

    latency = asyncio.run(first_event_after_queue())
    print(f"event-to-follower on PostgreSQL, polling every {LONG_POLL:.0f} s: {latency * 1000:.1f} ms")
    assert latency < 1.0


def test_follow_still_yields_what_was_written_before_stop(tmp_path: Path) -> None:
    """`layerbot publish` stops following once its tasks finished: their last events (Done)
    were written before that and must still be printed, without waiting for a poll."""
    store = open_store(str(tmp_path / "tasks.db"))
    task_id = queue(store, "k1")
    store.add_event(task_id, EventKind.DONE, "Done in 1 s")

    async def read() -> list[str]:
        stop = asyncio.Event()
        stop.set()
        return [e.message async for e in follow(store, task_ids=[task_id], stop=stop,
                                                    poll_interval=LONG_POLL)]

    try:
        assert asyncio.run(asyncio.wait_for(read(), 10)) == ["queued", "Done in 1 s"]
    finally:
        store.close()


def test_a_runner_stops_when_told_not_at_its_next_poll(tmp_path: Path, catalog: Catalog) -> None:
    async def run() -> float:
        store = open_store(str(tmp_path / "tasks.db"))
        runner = JobRunner(store, catalog, poll_interval=LONG_POLL)
        stop = asyncio.Event()
        running = asyncio.create_task(runner.run(stop=stop))
        await asyncio.sleep(0.5)  # idle, waiting for its next poll
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(running, LONG_POLL * 2)
        store.close()
        return time.monotonic() - started

    assert asyncio.run(run()) < LONG_POLL / 3
