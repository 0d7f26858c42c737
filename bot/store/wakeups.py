"""Wake-ups between processes sharing a store: PostgreSQL ``LISTEN``/``NOTIFY``.

A store notifies ``layerbot_tasks`` when a task is queued, released or asked to cancel (the
payload says which) and ``layerbot_events`` when an event is written, once the transaction
commits. Runners and followers wait for a notice *or* their poll interval, so polling stays
the fallback: a notice lost while a listener reconnects, or a backend without notifications
(SQLite, whose processes share one machine), costs at most one interval.
"""

from __future__ import annotations

import asyncio
import contextlib

TASKS_CHANNEL = "layerbot_tasks"
EVENTS_CHANNEL = "layerbot_events"

#: payloads on TASKS_CHANNEL
QUEUED_NOTICE, RELEASED_NOTICE, CANCEL_NOTICE = "queued", "released", "cancel"


async def wait_or_timeout(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passed; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()
