"""Following task events: the store is the bus.

Every event is a row in ``task_events``, written by whichever runner process works
the task, so a subscriber (the CLI, the Slack notifier) follows the table and sees
the same story whichever process did the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection

from bot.store.interface import Store
from bot.store.model import Event


async def follow(
    store: Store,
    *,
    task_ids: Collection[str] | None = None,
    after: int = 0,
    poll_interval: float = 0.2,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Yield events (of ``task_ids``, or of every task) newer than event id ``after``,
    until ``stop`` is set."""
    wanted = set(task_ids) if task_ids is not None else None
    while not (stop and stop.is_set()):
        # a worker thread: the store's lock may be held by a commit waiting for fsync
        for event in await asyncio.to_thread(store.events, after=after):
            after = event.id
            if wanted is None or event.task_id in wanted:
                yield event
        if stop is None:
            await asyncio.sleep(poll_interval)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)
