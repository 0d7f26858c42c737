"""The Slack app's own connection to the task database, used from one thread.

A commit waits for the disk (fsync); the event loop that acknowledges Slack within
3 s must not. So the Slack handlers and the notifier open a second connection to the
same SQLite file (WAL: readers and the runner's connection are not blocked) and run
every call on one dedicated thread, which also keeps that connection single-threaded.
An in-memory store cannot be shared between connections; then calls run inline.

This connection commits with ``synchronous = NORMAL`` (WAL): no fsync per commit, still
atomic and consistent; after a power loss the last intents or audit rows may be missing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bot.slack.intents import IntentStore
from bot.store.backends import open_store
from bot.store.interface import Store

T = TypeVar("T")


class SlackDB:
    def __init__(self, main: Store) -> None:
        self._executor: ThreadPoolExecutor | None = None
        if main.location == ":memory:":
            self.store = main
            self.intents = IntentStore(main)
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="slack-db")
        self.store = self._executor.submit(open_store, main.location).result()
        self._executor.submit(self.store.set_synchronous, "normal").result()
        self.intents = self._executor.submit(IntentStore, self.store).result()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` (a method of :attr:`store` or :attr:`intents`) on the database thread."""
        if self._executor is None:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.submit(self.store.close).result()
            self._executor.shutdown(wait=True)
            self._executor = None
