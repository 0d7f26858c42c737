"""Run blocking work in a thread and stop it cooperatively when the awaiting task is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(cancel: threading.Event, fn: Callable[..., T], *args: object) -> T:
    """fn(*args) in a worker thread. On cancellation, set `cancel` (which fn polls) and wait
    until fn has returned, so cleanup never races a thread still writing files."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        if not future.cancelled():
            future.exception()  # retrieved: the thread's BuildCancelled is expected
        raise
