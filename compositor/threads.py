"""Run blocking work in a thread and stop it cooperatively when the awaiting task is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(cancel: threading.Event, fn: Callable[..., T], *args: object) -> T:
    """fn(*args) in a worker thread. On cancellation, set `cancel` (which fn polls) and wait
    until fn has returned, so cleanup never races a thread still writing files."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        await settle(future)
        raise


async def settle(future: asyncio.Future[Any], *, cancel: bool = False) -> None:
    """Wait until ``future`` is done, even through repeated cancellation of the caller, and
    retrieve its exception (a thread's BuildCancelled is expected). ``cancel`` first asks
    a pending future to stop."""
    if cancel and not future.done():
        future.cancel()
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()
