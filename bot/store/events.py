"""Following task events: the store is the bus.

Every event is a row in ``task_events``, written by whichever runner process works
the task, so a subscriber (the CLI, the Slack notifier) follows the table and sees
the same story whichever process did the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

from bot.store.interface import Store
from bot.store.model import Event
from bot.store.wakeups import EVENTS_CHANNEL


async def follow(
    store: Store,
    *,
    task_ids: Collection[str] | None = None,
    after: int = 0,
    poll_interval: float = 0.2,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Yield events (of ``task_ids``, or of every task) newer than event id ``after``,
    until ``stop`` is set (those written before it was set included). On PostgreSQL a NOTIFY
    on ``layerbot_events`` reads them at once; ``poll_interval`` is the fallback (and SQLite's
    only way)."""
    wanted = set(task_ids) if task_ids is not None else None
    notice = asyncio.Event()
    listener = asyncio.create_task(store.listen(EVENTS_CHANNEL, lambda _payload: notice.set()),
                                   name="event-wake-ups")
    try:
        while True:
            # what was written before stop was set is still read, once
            stopping = stop is not None and stop.is_set()
            notice.clear()
            # a worker thread: the store's lock may be held by a commit waiting for fsync
            for event in await asyncio.to_thread(store.events, after=after):
                after = event.id
                if wanted is None or event.task_id in wanted:
                    yield event
            if stopping:
                break
            await _wait_for_any(notice, stop, poll_interval)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _wait_for_any(notice: asyncio.Event, stop: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in (notice, stop) if e is not None]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
