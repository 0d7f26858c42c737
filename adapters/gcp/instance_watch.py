"""Wait until an instance booted from a published image has run and stopped.

One :class:`ZoneWatch` per (session, project, zone) serves every task waiting there: each
round is one ``disks.list`` filtered to the watched images (a disk records the
``sourceImage`` it was made from; an instance does not) and, when any such disk is in use,
one ``instances.list`` of the disks' users; an instance counts when its *boot* disk is one
of them. Rounds back off while nothing changes. The watch ends when the last task stops
waiting.

A VM counts as having run and stopped when a round sees it TERMINATED/STOPPED with its last
stop after its last start, or when it was seen RUNNING and a later round does not find it
(deleted between two rounds: a guest that shut down and was deleted at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from adapters.base import Backoff, error_for_waiter
from adapters.gcp.compute_session import ComputeSession
from adapters.retry import RetryPolicy, retrying
from bot.logcontext import detached_task

log = logging.getLogger(__name__)

RAN = ("RUNNING",)
STOPPED = ("TERMINATED", "STOPPED")
#: how long the zone's rounds are retried while the API fails before the watches fail
WATCH_RETRY = RetryPolicy(attempts=8, budget=600.0, first_delay=2.0, max_delay=60.0)


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 time of the API (``2026-01-02T03:04:05.678-08:00``); None when empty.
    Compared as datetimes: two offsets make string order wrong."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class InstanceState:
    name: str
    status: str
    #: None when never started/stopped
    last_start: datetime | None
    last_stop: datetime | None

    @property
    def ran_and_stopped(self) -> bool:
        """Stopped after a start (a guest quicker than the round that would have seen it run)."""
        return (self.status in STOPPED and self.last_start is not None
                and self.last_stop is not None and self.last_stop >= self.last_start)


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _alternatives(values: set[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(values))


class ZoneWatch:
    def __init__(self, session: ComputeSession, project: str, zone: str,
                 poll: tuple[float, float], retry: RetryPolicy) -> None:
        self.session, self.project, self.zone = session, project, zone
        self.poll, self.retry = poll, retry
        #: image name -> the queues of the tasks waiting for it
        self.waiting: dict[str, list[asyncio.Queue[list[InstanceState] | BaseException]]] = {}
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, image: str) -> asyncio.Queue[list[InstanceState] | BaseException]:
        queue: asyncio.Queue[list[InstanceState] | BaseException] = asyncio.Queue()
        self.waiting.setdefault(image, []).append(queue)
        self._wake.set()  # a new image is looked for at once
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), name=f"gcp-watch-{self.zone}")
        return queue

    def remove(self, image: str, queue: asyncio.Queue[list[InstanceState] | BaseException]) -> None:
        queues = self.waiting.get(image, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.waiting.pop(image, None)

    async def stop(self) -> None:
        """End the rounds (the last task stopped waiting); returns once they have ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def one_round(self) -> dict[str, list[InstanceState]]:
        """The instances booted from each watched image."""
        images = set(self.waiting)
        project, zone = self.project, self.zone
        pattern = f".*/projects/{re.escape(project)}/global/images/({_alternatives(images)})"

        users: set[str] = set()

        def disks(c: object) -> dict[str, str]:
            from google.cloud import compute_v1

            found = c.disks.list(request=compute_v1.ListDisksRequest(  # type: ignore[attr-defined]
                project=project, zone=zone, filter=f'sourceImage eq "{pattern}"'))
            in_use = [d for d in found if d.users]
            users.update(_last(u) for d in in_use for u in d.users)
            return {d.self_link: _last(d.source_image) for d in in_use}

        by_disk = await self.session.call(disks, f"listing the disks of {zone}", idempotent=True)
        result: dict[str, list[InstanceState]] = {name: [] for name in images}
        if not by_disk:
            return result

        def instances(c: object) -> list[tuple[str, InstanceState]]:
            from google.cloud import compute_v1

            out = []
            for inst in c.instances.list(request=compute_v1.ListInstancesRequest(  # type: ignore[attr-defined]
                    project=project, zone=zone, filter=f'name eq "({_alternatives(users)})"')):
                boot = next((d.source for d in inst.disks if d.boot), None)
                if boot in by_disk:
                    out.append((by_disk[boot], InstanceState(
                        inst.name, inst.status, parse_time(inst.last_start_timestamp),
                        parse_time(inst.last_stop_timestamp))))
            return out

        for image, state in await self.session.call(instances, f"listing the instances of {zone}",
                                                    idempotent=True):
            if image in result:
                result[image].append(state)
        return result

    async def _run(self) -> None:
        backoff = Backoff(*self.poll)
        last: dict[str, list[InstanceState]] = {}
        try:
            while self.waiting:
                self._wake.clear()
                try:
                    found = await retrying(self.one_round, f"watching {self.zone}", self.retry)
                except Exception as exc:  # past the retry budget, or a bug: every task hears of it
                    for queues in self.waiting.values():
                        for queue in queues:
                            queue.put_nowait(error_for_waiter(exc, f"Google Cloud: watching {self.zone}"))
                    return
                self.rounds += 1
                if found != last:
                    backoff.reset()
                last = found
                for image, states in found.items():
                    for queue in self.waiting.get(image, []):
                        queue.put_nowait(states)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.current):
                        await self._wake.wait()
                backoff.current = min(backoff.current * backoff.factor, backoff.longest)
        except asyncio.CancelledError:
            pass


#: (session, project, zone) -> its watch; one listing per zone for every waiting task
_WATCHES: dict[tuple[int, str, str], ZoneWatch] = {}


@contextlib.asynccontextmanager
async def watching(session: ComputeSession, project: str, zone: str, image: str,
                   poll: tuple[float, float], retry: RetryPolicy = WATCH_RETRY,
                   ) -> AsyncIterator[asyncio.Queue[list[InstanceState] | BaseException]]:
    """The reports (instances booted from ``image``) of the zone's shared watch."""
    key = (id(session), project, zone)
    watch = _WATCHES.get(key)
    if watch is None or watch.session is not session:
        watch = _WATCHES[key] = ZoneWatch(session, project, zone, poll, retry)
    queue = watch.add(image)
    try:
        yield queue
    finally:
        watch.remove(image, queue)
        if not watch.waiting:
            if _WATCHES.get(key) is watch:
                del _WATCHES[key]
            await watch.stop()


def zone_watch(session: ComputeSession, project: str, zone: str) -> ZoneWatch | None:
    """The zone's shared watch while a task waits (tests count its rounds)."""
    return _WATCHES.get((id(session), project, zone))
