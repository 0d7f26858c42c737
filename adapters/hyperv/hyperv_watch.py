"""The VMs' states, one ``Get-VM`` per host (and user) for every waiting task.

Each round is one script (:func:`adapters.hyperv.hyperv_scripts.vm_states`) naming every
watched VM; a VM missing from the answer is gone. A round answers only the tasks whose VM it
asked about: one that starts waiting while a round is in flight waits for the next. Rounds
back off while nothing changes and start again at once when a task starts waiting. The watch
holds its own share of the host's runspace, so it outlives the adapter that started it, and
ends with the last waiting task; a round that fails gives each waiting task its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapters.base import Backoff, error_for_waiter
from adapters.blocking import SessionKey
from adapters.hyperv.hyperv_scripts import vm_states
from adapters.retry import RetryPolicy, retrying
from adapters.windows_remote.powershell import Endpoint, PowerShellSession, RemoteClients, acquire
from bot.logcontext import detached_task

#: how long a round is retried while the host fails before the watches fail
WATCH_RETRY = RetryPolicy(attempts=8, budget=600.0, first_delay=2.0, max_delay=60.0)



@dataclass(frozen=True)
class Seen:
    """A watched VM in one round."""

    #: Hyper-V's VMState: Running, Off, and their *Critical forms (storage trouble), Saved...
    state: str
    #: when its disk was last written (Unix seconds, the host's clock); None: not known
    disk_written: float | None = None

    @property
    def running(self) -> bool:
        return self.state in ("Running", "RunningCritical")

    @property
    def off(self) -> bool:
        return self.state in ("Off", "OffCritical")

    @classmethod
    def of(cls, answer: dict[str, Any]) -> Seen:
        written = answer.get("DiskWritten")
        return cls(str(answer["State"]), float(written) if isinstance(written, int | float) else None)


Report = dict[str, Seen] | BaseException  # VMId -> what the round saw (absent: the VM is gone)


class HostWatch:
    def __init__(self, key: SessionKey, session: PowerShellSession, clients: RemoteClients,
                 retry: RetryPolicy) -> None:
        self.key, self.session, self.clients, self.retry = key, session, clients, retry
        #: VMId -> (its name, the queues of the tasks waiting for it)
        self.waiting: dict[str, tuple[str, list[asyncio.Queue[Report]]]] = {}
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, vm_id: str, name: str) -> asyncio.Queue[Report]:
        queue: asyncio.Queue[Report] = asyncio.Queue()
        self.waiting.setdefault(vm_id, (name, []))[1].append(queue)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), name=f"hyperv-watch-{self.session.endpoint}")
        return queue

    def remove(self, vm_id: str, queue: asyncio.Queue[Report]) -> None:
        _, queues = self.waiting.get(vm_id, ("", []))
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.waiting.pop(vm_id, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.clients.pool.release(self.key, self.session)

    async def one_round(self) -> tuple[frozenset[str], dict[str, Seen]]:
        """The VMIds this round asked about (those waited for at its start) and what it saw."""
        watched = {vm_id: name for vm_id, (name, _) in self.waiting.items()}
        found = await self.session.run(vm_states(sorted(set(watched.values())), sorted(watched)),
                                       idempotent=True)
        seen = {str(vm["VMId"]): Seen.of(vm) for vm in found
                if isinstance(vm, dict) and vm.get("VMId") in watched}
        return frozenset(watched), seen

    def _fail(self, exc: Exception) -> None:
        where = f"{self.session.remote.host}: watching the VMs"
        for _, queues in self.waiting.values():
            for queue in queues:
                queue.put_nowait(error_for_waiter(exc, where))

    async def _run(self) -> None:
        backoff = Backoff(*self.clients.poll)
        last: dict[str, Seen] = {}
        while self.waiting:
            self._wake.clear()
            try:
                watched, found = await retrying(self.one_round, "watching the VMs", self.retry)
            except Exception as exc:
                self._fail(exc)
                return
            self.rounds += 1
            if found != last:
                backoff.reset()
            last = found
            for vm_id in watched & self.waiting.keys():
                for queue in self.waiting[vm_id][1]:
                    queue.put_nowait(found)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.current):
                    await self._wake.wait()
            backoff.current = min(backoff.current * backoff.factor, backoff.longest)


_WATCHES: dict[SessionKey, HostWatch] = {}


@contextlib.asynccontextmanager
async def watching(endpoint: Endpoint, clients: RemoteClients, vm_id: str, name: str,
                   retry: RetryPolicy = WATCH_RETRY) -> AsyncIterator[asyncio.Queue[Report]]:
    """The reports of the host's shared watch for the VM ``vm_id`` named ``name``."""
    key, session = acquire(endpoint, clients)
    watch = _WATCHES.get(key)
    if watch is None:
        watch = _WATCHES[key] = HostWatch(key, session, clients, retry)
    else:
        await clients.pool.release(key, session)  # the watch holds its own share
    queue = watch.add(vm_id, name)
    try:
        yield queue
    finally:
        watch.remove(vm_id, queue)
        if not watch.waiting and _WATCHES.get(key) is watch:
            del _WATCHES[key]
            await watch.stop()


def host_watch(endpoint: Endpoint, clients: RemoteClients) -> HostWatch | None:
    """The host's shared watch while a task waits (tests count its rounds)."""
    from adapters.windows_remote.powershell import session_key

    return _WATCHES.get(session_key(endpoint, clients))
