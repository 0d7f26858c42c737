"""Blocking reads of the ops endpoints (a scrape, the store's answer) off the process's shared
thread pool, one at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs ``call`` on a thread of its own, one call at a time: a caller that comes while it
    runs gets that call's result, so a slow database is asked once however many scrapes wait,
    and no wait holds a thread the tasks' work needs (asyncio's default pool).

    The thread is a daemon: a read stuck on a database that went away never holds up exit."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._name = name
        self._guard = threading.Lock()
        self._running: Future[T] | None = None

    def start(self) -> Future[T]:
        """The call in flight, or a new one when none is."""
        with self._guard:
            if self._running is None or self._running.done():
                future: Future[T] = Future()
                future.set_running_or_notify_cancel()
                threading.Thread(target=self._run, args=(future,), name=self._name, daemon=True).start()
                self._running = future
            return self._running

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self._call())
        except BaseException as exc:  # handed to every caller waiting on it
            future.set_exception(exc)

    def result(self, timeout: float) -> T:
        """Wait (blocking) up to ``timeout`` seconds; TimeoutError when it has not answered
        (the call goes on, and the next caller waits for it rather than starting another)."""
        return self.start().result(timeout)

    async def wait(self, timeout: float | None = None) -> T:
        """Wait without blocking the loop; TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(asyncio.wrap_future(self.start()), timeout)
