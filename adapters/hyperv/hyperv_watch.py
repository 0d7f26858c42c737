"""The VMs' states, one ``Get-VM`` per host (and user) for every waiting task.

Each round is one script (:func:`adapters.hyperv.hyperv_scripts.vm_states`) naming every
watched VM; a VM missing from the answer is gone. Rounds back off while nothing changes and
start again at once when a task starts waiting. The watch holds its own share of the host's
runspace, so it outlives the adapter that started it, and ends with the last waiting task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from adapters.base import AdapterError, Backoff
from adapters.blocking import SessionKey
from adapters.hyperv.hyperv_scripts import vm_states
from adapters.retry import RetryPolicy, retrying
from adapters.windows_remote.powershell import Endpoint, PowerShellSession, RemoteClients, acquire

#: how long a round is retried while the host fails before the watches fail
WATCH_RETRY = RetryPolicy(attempts=8, budget=600.0, first_delay=2.0, max_delay=60.0)

Report = dict[str, str] | BaseException  # VMId -> State (absent: the VM is gone)


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
            self._task = asyncio.create_task(self._run(), name=f"hyperv-watch-{self.session.endpoint}")
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

    async def one_round(self) -> dict[str, str]:
        ids = sorted(self.waiting)
        names = sorted({name for name, _ in self.waiting.values()})
        found = await self.session.run(vm_states(names, ids), idempotent=True)
        return {str(vm["VMId"]): str(vm["State"]) for vm in found
                if isinstance(vm, dict) and vm.get("VMId") in self.waiting}

    async def _run(self) -> None:
        backoff = Backoff(*self.clients.poll)
        last: dict[str, str] = {}
        while self.waiting:
            self._wake.clear()
            try:
                found = await retrying(self.one_round, "watching the VMs", self.retry)
            except AdapterError as exc:
                for _, queues in self.waiting.values():
                    for queue in queues:
                        queue.put_nowait(exc)
                return
            self.rounds += 1
            if found != last:
                backoff.reset()
            last = found
            for _, queues in self.waiting.values():
                for queue in queues:
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
