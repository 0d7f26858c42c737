"""Follow VM power states with ``event.from``: one event session per host for every waiting task.

A :class:`HostEvents` holds its own XenAPI session (an event.from blocks for up to
``event_wait`` seconds, the call session must stay free) and loops on
``event.from(["vm"], token, wait)``, handing each watched VM's new power state to the tasks
waiting for it. A task that starts waiting first reads its VM's state now (through the call
session); every later change comes as an event. The session logs in again when xapi lost it
(adapters.blocking); a token xapi no longer knows starts over from the current states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from adapters.base import AdapterError, error_for_waiter
from adapters.blocking import SessionKey
from adapters.retry import RetryPolicy, retrying
from adapters.xenserver.xapi_session import XapiSession, failure_code
from bot.logcontext import detached_task

log = logging.getLogger(__name__)

#: how long the event loop retries while xapi fails (a restart) before the watches fail
WATCH_RETRY = RetryPolicy(attempts=8, budget=600.0, first_delay=2.0, max_delay=60.0)
#: what a queue gets: a power state ("Running", "Halted", ...), "deleted", or the error
Report = str | BaseException
_START_OVER = frozenset({"EVENTS_LOST", "EVENT_FROM_TOKEN_INVALID", "SESSION_NOT_REGISTERED"})


class HostEvents:
    def __init__(self, session: XapiSession, wait: float, retry: RetryPolicy) -> None:
        self.session = session
        self.wait = wait
        self.retry = retry
        #: VM ref -> the queues of the tasks waiting for it
        self.waiting: dict[str, list[asyncio.Queue[Report]]] = {}
        self.calls = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, vm_ref: str) -> asyncio.Queue[Report]:
        queue: asyncio.Queue[Report] = asyncio.Queue()
        self.waiting.setdefault(vm_ref, []).append(queue)
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), name=f"xen-events-{self.session.url}")
        return queue

    def remove(self, vm_ref: str, queue: asyncio.Queue[Report]) -> None:
        queues = self.waiting.get(vm_ref, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.waiting.pop(vm_ref, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.session.close(drain_seconds=self.wait + 5)

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            queues = self.waiting.get(str(event.get("ref")), [])
            if not queues or str(event.get("class", "")).lower() != "vm":
                continue
            if event.get("operation") == "del":
                state = "deleted"
            else:
                state = str((event.get("snapshot") or {}).get("power_state", ""))
            for queue in queues:
                queue.put_nowait(state)

    async def _next(self, token: str) -> tuple[list[dict[str, Any]], str]:
        def call(x: Any) -> Any:
            return getattr(x.event, "from")(["vm"], token, float(self.wait))

        self.calls += 1
        try:
            result = await self.session.xapi_once("waiting for VM events", call)
        except AdapterError as exc:
            if any(code in str(exc) for code in _START_OVER):
                return [], ""
            raise
        return list(result.get("events", [])), str(result.get("token", ""))

    async def _run(self) -> None:
        token = ""
        try:
            while self.waiting:
                try:
                    events, token = await retrying(lambda t=token: self._next(t), "watching VM events",
                                                   self.retry)
                except Exception as exc:  # past the retry budget, or a bug: every task hears of it
                    for queues in self.waiting.values():
                        for queue in queues:
                            queue.put_nowait(error_for_waiter(exc, f"{self.session.url}: watching VM events"))
                    return
                self._deliver(events)
        except asyncio.CancelledError:
            pass


#: session key -> its host's events; one event session per host, user and password
_HOSTS: dict[SessionKey, HostEvents] = {}
_STOPPING: set[asyncio.Task[None]] = set()


@contextlib.asynccontextmanager
async def watching(key: SessionKey, make_session: Callable[[], XapiSession], vm_ref: str,
                   wait: float, retry: RetryPolicy = WATCH_RETRY) -> AsyncIterator[asyncio.Queue[Report]]:
    """The power states of ``vm_ref`` from the host's shared event session."""
    host = _HOSTS.get(key)
    if host is None:
        host = _HOSTS[key] = HostEvents(make_session(), wait, retry)
    queue = host.add(vm_ref)
    try:
        yield queue
    finally:
        host.remove(vm_ref, queue)
        if not host.waiting and _HOSTS.get(key) is host:
            del _HOSTS[key]
            # the logout waits for the event.from under way: the task's Done need not
            stopping = asyncio.create_task(host.stop(), name="xen-events-stop")
            _STOPPING.add(stopping)
            stopping.add_done_callback(_STOPPING.discard)


def host_events(key: SessionKey) -> HostEvents | None:
    """The host's shared event session while a task waits (tests count its calls)."""
    return _HOSTS.get(key)


def is_gone(exc: BaseException) -> bool:
    return failure_code(exc) in ("HANDLE_INVALID", "UUID_INVALID")
