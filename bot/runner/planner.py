"""Plans for ``layerbot serve``, made in a separate Python process.

Planning a /publish walks every directory layer (the digests' signatures), looks into the
layers for how the guest boots (reading a big tar layer's index is seconds of Python) and
opens and closes the connector's adapter. In a thread of ``serve`` that Python work would
hold the GIL that the event loop answering Slack needs; in a child process it does not.
The child is started once, runs below the loop's priority, and is handed the catalog and the
connector types registered in this process.

Identical requests that arrive while one is being planned share its answer (a burst of
``/publish x`` costs one plan, not one each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import adapters
from bot.catalog import Catalog
from bot.runner.planning import PublishPlan, plan

log = logging.getLogger(__name__)

PlanKey = tuple[tuple[str, ...], bool]

_catalog: Catalog | None = None


def _start_child(catalog: Catalog, registry: dict[str, adapters.AdapterEntry], niceness: int) -> None:
    global _catalog
    _catalog = catalog
    adapters.restore_registry(registry)
    with contextlib.suppress(OSError):
        os.nice(niceness)


def _plans_in_child(names: tuple[str, ...], check_cache: bool) -> list[PublishPlan]:
    assert _catalog is not None, "the planner process was not started with a catalog"
    return [plan(_catalog, name, check_cache=check_cache) for name in names]


class Planner:
    """``plans(names)`` as :func:`bot.runner.planning.plan` gives them, from a child process."""

    def __init__(self, catalog: Catalog, *, niceness: int = 0) -> None:
        self.catalog = catalog
        self.niceness = niceness
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[PlanKey, asyncio.Future[list[PublishPlan]]] = {}

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: this process has threads (the store's, the executor's)
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_child,
                initargs=(self.catalog, adapters.registry(), self.niceness))
        return self._pool

    async def start(self) -> None:
        """Start the child now, so the first /publish does not wait for its imports."""
        await self.plans([], check_cache=False)

    async def plans(self, names: list[str], *, check_cache: bool) -> list[PublishPlan]:
        """Raises what :func:`plan` raises (KeyError, PlanError, SDKMissing...)."""
        key: PlanKey = (tuple(names), check_cache)
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._plan(key))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        # shielded: one waiter cancelled (its request given up) does not cancel the others'
        return list(await asyncio.shield(running))

    async def _plan(self, key: PlanKey) -> list[PublishPlan]:
        """One retry in a new child when the child died (killed, out of memory); a plan that
        kills its child twice is reported as the error."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                return await loop.run_in_executor(self._executor(), _plans_in_child, *key)
            except BrokenProcessPool:
                log.error("the planner process died while planning %s (attempt %d)",
                          list(key[0]), attempt)
                self._discard()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
