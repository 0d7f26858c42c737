"""The power state of every watched VM of one vCenter session, through one PropertyCollector.

Each watched VM gets a filter on the session's collector; one ``WaitForUpdatesEx`` loop, on
one thread of its own, hands every power-state change to the watches of that VM (asyncio
queues). Hundreds of tasks can wait for their guests this way with one thread and one
collector per vCenter, instead of a thread and a collector each.

A watch first gets the state read right after its filter was created, then every change
the collector reports. That read is not ordered with the collector's reports, so a watch
that sees "off" after "on" confirms with :meth:`PowerWatcher.current` before trusting it.
The collector is rebuilt (filters and states included) when the session was lost: vCenter
drops a session's collectors with it. A retryable failure of the wait (vCenter restarting, a
timeout) does not end the watches: the loop backs off (:class:`adapters.retry.RetryPolicy`)
and rebuilds the collector, logging in again through the session; only failures that last
past the policy's budget, or a non-retryable error, are sent to every watch (each its own
error; one that is no AdapterError as a PlatformError naming it).

The last watch to end (or a first watch that fails while starting) destroys the collector,
shuts the thread down and removes the watcher from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from adapters.base import AdapterError, NotFoundError, error_for_waiter
from adapters.retry import RetryPolicy
from adapters.vsphere.session import VSphereSession
from bot.logcontext import detached_task

log = logging.getLogger(__name__)
T = TypeVar("T")
#: How long the watch loop keeps retrying while vCenter fails (a restart takes minutes).
WATCH_RETRY = RetryPolicy(attempts=1_000_000, budget=900.0, first_delay=1.0, max_delay=60.0)
POWER_STATE = "runtime.powerState"
#: What a watch receives: a power state ("poweredOn", "poweredOff", "suspended") or the error
#: that ends it.
Report = str | BaseException


class _Stale(AdapterError):
    """The collector vanished with its session; build a new one."""


class _Gone(AdapterError):
    """A watched VM was deleted (the collector names it)."""

    def __init__(self, moid: str) -> None:
        super().__init__(moid)
        self.moid = moid


def moid_of(obj: Any) -> str:
    return str(obj._moId)


def deleted(moid: str, what: str) -> NotFoundError:
    return NotFoundError(f"vSphere: {moid} was deleted while waiting for {what}")


class PowerWatcher:
    """Power-state watches of one session's VMs; see :func:`power_watcher`."""

    def __init__(self, session: VSphereSession, wait_seconds: int,
                 retry: RetryPolicy = WATCH_RETRY) -> None:
        self.session = session
        self.wait_seconds = wait_seconds
        self.retry = retry
        self.loop = asyncio.get_running_loop()
        self._queues: dict[str, set[asyncio.Queue[Report]]] = {}
        self._what: dict[str, str] = {}
        self._vms: dict[str, Any] = {}
        self._filters: dict[str, Any] = {}
        self._pc: Any = None
        #: the collector's version the loop waits from
        self._version = ""
        self._thread: ThreadPoolExecutor | None = None
        self._runner: asyncio.Task[None] | None = None
        #: collector and filter changes, one at a time
        self._changing = asyncio.Lock()
        #: collectors created (tests: one per session, not per VM, and that each was destroyed)
        self.made: list[Any] = []

    @property
    def watched(self) -> int:
        return len(self._queues)

    @property
    def collectors(self) -> int:
        return len(self.made)

    # ------------------------------------------------------------ watches
    @contextlib.asynccontextmanager
    async def watch(self, vm: Any, what: str) -> AsyncIterator[asyncio.Queue[Report]]:
        """A queue of ``vm``'s power states, from its state now on, while the block runs."""
        moid = moid_of(vm)
        queue: asyncio.Queue[Report] = asyncio.Queue()
        async with self._changing:
            _WATCHERS.setdefault(self.session, self)  # a watch after the registry dropped it
            self._queues.setdefault(moid, set()).add(queue)
            self._vms[moid] = vm
            self._what.setdefault(moid, what)
            try:
                if self._thread is None:
                    self._thread = ThreadPoolExecutor(1, thread_name_prefix="vsphere-watch")
                if self._pc is None:  # the first watch, or the loop could not rebuild yet
                    await self._rebuild()
                if moid not in self._filters:
                    try:
                        self._filters[moid] = await self._call(
                            lambda si: self._new_filter(self._pc, vm, what), "starting the watch")
                    except _Stale:  # the session was lost since the collector was made
                        await self._rebuild()
                state = await self.current(vm)
            except BaseException:
                await asyncio.shield(self._forget_and_stop_if_unused(moid, queue))
                raise
        queue.put_nowait(state)
        if self._runner is None or self._runner.done():
            self._runner = detached_task(self._run(), name="vsphere-power-watch")
        try:
            yield queue
        finally:
            await asyncio.shield(self._unwatch(moid, queue))

    async def current(self, vm: Any) -> str:
        """``vm``'s power state, read now."""
        from pyVmomi import vim, vmodl

        from adapters.vsphere.inventory import prop

        def read(si: Any) -> Any:
            try:
                return prop(si, vm, vim.VirtualMachine, POWER_STATE)
            except vmodl.fault.ManagedObjectNotFound:
                return None

        state = await self.session.call(read, "reading the power state")
        if state is None:
            raise deleted(moid_of(vm), self._what.get(moid_of(vm), "its power state"))
        return str(state)

    async def _unwatch(self, moid: str, queue: asyncio.Queue[Report]) -> None:
        async with self._changing:
            await self._forget_and_stop_if_unused(moid, queue)

    async def _forget_and_stop_if_unused(self, moid: str, queue: asyncio.Queue[Report]) -> None:
        """(lock held)"""
        await self._forget(moid, queue)
        if not self._queues:
            await self._stop()

    async def _forget(self, moid: str, queue: asyncio.Queue[Report]) -> None:
        """Drop one watch (lock held); the last watch of a VM removes its filter."""
        watches = self._queues.get(moid, set())
        watches.discard(queue)
        if watches:
            return
        self._queues.pop(moid, None)
        self._vms.pop(moid, None)
        self._what.pop(moid, None)
        flt = self._filters.pop(moid, None)
        if flt is not None:
            await self._call(lambda si: quietly(flt.DestroyPropertyFilter), "stopping a watch")

    async def _stop(self) -> None:
        """No watch left (lock held): end the loop, the collector and the thread."""
        if _WATCHERS.get(self.session) is self:
            del _WATCHERS[self.session]
        runner, self._runner = self._runner, None
        pc, self._pc = self._pc, None
        if pc is not None:  # also ends the WaitForUpdatesEx the thread is in
            await self._call(lambda si: _close_collector(pc), "stopping the watch")
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    # ------------------------------------------------------------ the loop
    async def _run(self) -> None:
        failing_since: float | None = None
        failures = 0
        while self._queues:
            pc = self._pc
            try:
                if pc is None:  # the last rebuild failed
                    async with self._changing:
                        if self._pc is None and self._queues:
                            await self._rebuild()
                    continue
                result = await self._wait(pc, self._version)
            except _Stale:  # rebuilt at the top of the loop
                async with self._changing:
                    if self._pc is pc:
                        self._pc = None
                continue
            except _Gone as gone:
                async with self._changing:
                    self._send(gone.moid, deleted(gone.moid, self._what.get(gone.moid, "")))
                    flt = self._filters.pop(gone.moid, None)
                    if flt is not None:
                        await self._call(lambda si, flt=flt: quietly(flt.DestroyPropertyFilter),
                                         "stopping a watch")
                continue
            except AdapterError as exc:
                failures += 1
                failing_since = failing_since or self.retry.clock()
                delay = self.retry.delay(failures, exc)
                spent = self.retry.clock() + delay - failing_since
                if not exc.retryable or failures >= self.retry.attempts or spent > self.retry.budget:
                    self._fail_all(exc)
                    return
                log.warning("%s: the power watch failed (%s); rebuilding it in %.1f s",
                            self.session.endpoint, exc, delay)
                await self.retry.sleep(delay)
                async with self._changing:
                    if self._pc is pc:
                        self._pc = None
                        if pc is not None:  # may still exist (a timeout): do not leave it
                            await self._call(lambda si, pc=pc: _close_collector(pc),
                                             "dropping the failed watch")
                continue
            except Exception as exc:  # a bug, not the platform: every watch fails with it
                self._fail_all(exc)
                return
            failing_since, failures = None, 0
            if result is None or self._pc is not pc:
                continue
            self._version = result.version
            for filter_update in result.filterSet or []:
                for update in filter_update.objectSet or []:
                    moid = moid_of(update.obj)
                    if update.kind == "leave":
                        self._send(moid, deleted(moid, self._what.get(moid, "")))
                    for change in update.changeSet or []:
                        if change.name == POWER_STATE and change.val is not None:
                            self._send(moid, str(change.val))

    async def _wait(self, pc: Any, version: str) -> Any:
        from pyVmomi import vmodl

        watched = frozenset(self._vms)

        def wait_once(si: Any) -> Any:
            try:
                return pc.WaitForUpdatesEx(version, vmodl.query.PropertyCollector.WaitOptions(
                    maxWaitSeconds=self.wait_seconds))
            except vmodl.fault.RequestCanceled:  # a filter changed, or the watch stops
                return None
            except vmodl.fault.ManagedObjectNotFound as exc:
                if moid_of(exc.obj) == moid_of(pc):
                    raise _Stale("collector lost") from None
                if moid_of(exc.obj) in watched:
                    raise _Gone(moid_of(exc.obj)) from None
                raise

        assert self._thread is not None
        return await self.loop.run_in_executor(
            self._thread, self.session.call_sync, wait_once, "watching the VMs")

    async def _rebuild(self) -> None:
        """A new collector with a filter per watched VM, and their states now (lock held).
        A retryable error is raised (the loop tries again later; ``_pc`` stays None)."""
        self._pc = None
        self._filters.clear()
        pc = await self._call(self._new_collector, "starting the watch")
        for moid, vm in list(self._vms.items()):
            try:
                self._filters[moid] = await self._call(
                    lambda si, vm=vm, moid=moid: self._new_filter(pc, vm, self._what[moid]),
                    "starting the watch")
                self._send(moid, await self.current(vm))
            except AdapterError as exc:
                if exc.retryable:
                    await self._call(lambda si: _close_collector(pc), "dropping the failed watch")
                    raise
                self._send(moid, exc)
        self._pc = pc

    def _fail_all(self, exc: BaseException) -> None:
        for moid in list(self._queues):
            self._send(moid, exc)

    def _send(self, moid: str, report: Report) -> None:
        for queue in self._queues.get(moid, ()):
            queue.put_nowait(report if isinstance(report, str) else
                             error_for_waiter(report, f"vSphere {self.session.endpoint}: the power watch"))

    # ------------------------------------------------------------ vCenter calls
    async def _call(self, fn: Callable[[Any], T], doing: str) -> T:
        return await asyncio.shield(self.session.call(fn, doing))

    def _new_collector(self, si: Any) -> Any:
        """A collector whose first (empty) update is taken: it tracks changes from now on,
        before any watch reads a state or asks vCenter's events (vcsim starts tracking only
        then; vCenter with its filters)."""
        from pyVmomi import vmodl

        pc = si.content.propertyCollector.CreatePropertyCollector()
        self.made.append(pc)
        try:
            first = pc.WaitForUpdatesEx("", vmodl.query.PropertyCollector.WaitOptions(
                maxWaitSeconds=0))
        except Exception:
            _close_collector(pc)
            raise
        self._version = first.version if first is not None else ""
        return pc

    @staticmethod
    def _new_filter(pc: Any, vm: Any, what: str) -> Any:
        from pyVmomi import vim, vmodl

        spec = vmodl.query.PropertyCollector
        try:
            return pc.CreateFilter(spec.FilterSpec(
                objectSet=[spec.ObjectSpec(obj=vm, skip=False)],
                propSet=[spec.PropertySpec(type=vim.VirtualMachine, pathSet=[POWER_STATE])],
            ), partialUpdates=False)
        except vmodl.fault.ManagedObjectNotFound as exc:
            if moid_of(exc.obj) == moid_of(pc):
                raise _Stale("collector lost") from None
            raise deleted(moid_of(vm), what) from None


def quietly(method: Callable[[], Any]) -> None:
    try:
        method()
    except Exception:  # gone with an expired session: nothing to release
        return


def _close_collector(pc: Any) -> None:
    quietly(pc.CancelWaitForUpdates)
    quietly(pc.DestroyPropertyCollector)


#: The watcher of each session that has watches; a watcher removes itself when its last watch
#: ends (a weak mapping would never drop it: the watcher holds its session, the key).
_WATCHERS: dict[VSphereSession, PowerWatcher] = {}


def power_watcher(session: VSphereSession, wait_seconds: int,
                  retry: RetryPolicy = WATCH_RETRY) -> PowerWatcher:
    """The session's watcher (one per vCenter session and event loop)."""
    watcher = _WATCHERS.get(session)
    if watcher is None or watcher.loop is not asyncio.get_running_loop():
        watcher = _WATCHERS[session] = PowerWatcher(session, wait_seconds, retry)
    return watcher


def watchers() -> list[PowerWatcher]:
    """The watchers that have watches now."""
    return list(_WATCHERS.values())
