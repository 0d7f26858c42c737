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
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait

import adapters
from bot.catalog import Catalog
from bot.cli import log_setup
from bot.runner.parent_death import die_with_parent
from bot.runner.planning import PlanError, PublishPlan, plan

log = logging.getLogger(__name__)

PlanKey = tuple[tuple[str, ...], bool]

#: How long close() lets the child finish its plan before it is terminated.
CLOSE_GRACE_SECONDS = 2.0

_catalog: Catalog | None = None


class UnexpectedPlanError(RuntimeError):
    """Planning raised an error of a type the caller does not expect; the message names it."""


def _start_child(catalog: Catalog, registry: dict[str, adapters.AdapterEntry], niceness: int,
                 parent: int, logging_settings: tuple[int, log_setup.LogFormat] | None = None) -> None:
    die_with_parent(parent)
    if logging_settings is not None:  # else its records would reach stderr unmasked, as plain text
        log_setup.configure(*logging_settings)
    global _catalog
    _catalog = catalog
    adapters.restore_registry(registry)
    with contextlib.suppress(OSError):
        os.nice(niceness)


def _plans_in_child(names: tuple[str, ...], check_cache: bool) -> list[PublishPlan]:
    assert _catalog is not None, "the planner process was not started with a catalog"
    try:
        return [plan(_catalog, name, check_cache=check_cache) for name in names]
    except (KeyError, PlanError, adapters.SDKMissing) as exc:
        if _survives_pickling(exc):
            raise
        raise UnexpectedPlanError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        # An exception that cannot be rebuilt in the parent (its __init__ takes other
        # arguments than its .args) would break the pool: the plan would run again and the
        # user would read "the planner process died" instead of this message.
        raise UnexpectedPlanError(f"{type(exc).__name__}: {exc}") from exc


def _survives_pickling(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


class Planner:
    """``plans(names)`` as :func:`bot.runner.planning.plan` gives them, from a child process."""

    def __init__(self, catalog: Catalog, *, niceness: int = 0) -> None:
        self.catalog = catalog
        self.niceness = niceness
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[PlanKey, asyncio.Future[list[PublishPlan]]] = {}
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the planner is closed")
        if self._pool is None:
            # spawn, not fork: this process has threads (the store's, the executor's)
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_child,
                initargs=(self.catalog, adapters.registry(), self.niceness, os.getpid(),
                          log_setup.settings()))
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
                if self._closed:  # close() terminated the child
                    raise
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
        """Stop the child: at once when idle, after CLOSE_GRACE_SECONDS when a plan runs
        (an adapter opening a connection may take its time): serve's stop does not wait on it."""
        self._closed = True
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        children = list(pool._processes.values())  # type: ignore[attr-defined]
        pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(_end, children, CLOSE_GRACE_SECONDS)


def _end(children: list[multiprocessing.process.BaseProcess], grace: float) -> None:
    """Wait up to ``grace`` seconds for the children to exit, then terminate the others.
    Waits on their sentinels, not join(): the pool's own thread reaps them."""
    deadline = time.monotonic() + grace
    for child in children:
        if not wait([child.sentinel], max(0.0, deadline - time.monotonic())):
            log.warning("the planner process %s is still planning; terminating it", child.pid)
            child.terminate()
            wait([child.sentinel], grace)
