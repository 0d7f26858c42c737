"""The VMs' power states, one poll per Prism endpoint (URL, user, TLS) for every waiting task.

Each round is one ``POST /vms/list`` filtered to the watched VM names (FIQL ``,`` is OR);
the VMs are matched by UUID. Rounds back off while nothing changes and start again at once
when a task starts waiting. The watch has its own client, so it outlives the adapter that
started it, and ends with the last waiting task; a round that fails gives each waiting task
its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from adapters.base import Backoff, error_for_waiter
from adapters.nutanix.nutanix_config import Config
from adapters.nutanix.prism_client import Clients, PrismClient, endpoint_key
from adapters.nutanix.prism_errors import PLATFORM
from adapters.retry import RetryPolicy, retrying
from bot.logcontext import detached_task

#: how long a round is retried while Prism fails before the watches fail
WATCH_RETRY = RetryPolicy(attempts=8, budget=600.0, first_delay=2.0, max_delay=60.0)

Report = dict[str, str] | BaseException  # VM uuid -> power state (absent: the VM is gone)
Key = tuple[str, str, str, bool, str]


class EndpointWatch:
    def __init__(self, prism: PrismClient, poll: tuple[float, float], retry: RetryPolicy) -> None:
        self.prism, self.poll, self.retry = prism, poll, retry
        #: VM uuid -> (its name, the queues of the tasks waiting for it)
        self.waiting: dict[str, tuple[str, list[asyncio.Queue[Report]]]] = {}
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, uuid: str, name: str) -> asyncio.Queue[Report]:
        queue: asyncio.Queue[Report] = asyncio.Queue()
        self.waiting.setdefault(uuid, (name, []))[1].append(queue)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = detached_task(self._run(), name="nutanix-watch")
        return queue

    def remove(self, uuid: str, queue: asyncio.Queue[Report]) -> None:
        _, queues = self.waiting.get(uuid, ("", []))
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.waiting.pop(uuid, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.prism.close()

    async def one_round(self) -> tuple[frozenset[str], dict[str, str]]:
        """The UUIDs this round looked for (snapshot at its start) and their power states:
        a task that starts waiting while the round is in flight waits for the next one."""
        watched = {uuid: name for uuid, (name, _) in self.waiting.items()}
        names = sorted(set(watched.values()))
        answer = await self.prism.call(
            "POST", "/vms/list", {"kind": "vm", "length": 500,
                                  "filter": ",".join(f"vm_name=={n}" for n in names)},
            doing="listing the watched VMs", idempotent=True)
        states: dict[str, str] = {}
        for vm in answer.get("entities") or []:
            uuid = (vm.get("metadata") or {}).get("uuid")
            state = _power_state(vm)
            if uuid in watched and state:
                states[uuid] = state
        return frozenset(watched), states

    async def _run(self) -> None:
        backoff = Backoff(*self.poll)
        last: dict[str, str] = {}
        while self.waiting:
            self._wake.clear()
            try:
                watched, found = await retrying(self.one_round, "watching the VMs", self.retry)
            except Exception as exc:  # past the retry budget, or a bug: every task hears of it
                for _, queues in self.waiting.values():
                    for queue in queues:
                        queue.put_nowait(error_for_waiter(exc, f"{PLATFORM}: watching the VMs"))
                return
            self.rounds += 1
            if found != last:
                backoff.reset()
            last = found
            for uuid in watched & self.waiting.keys():
                for queue in self.waiting[uuid][1]:
                    queue.put_nowait(found)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.current):
                    await self._wake.wait()
            backoff.current = min(backoff.current * backoff.factor, backoff.longest)


def _power_state(vm: dict[str, Any]) -> str | None:
    for part in ("status", "spec"):
        state = ((vm.get(part) or {}).get("resources") or {}).get("power_state")
        if isinstance(state, str):
            return state
    return None


_WATCHES: dict[Key, EndpointWatch] = {}


@contextlib.asynccontextmanager
async def watching(config: Config, clients: Clients, uuid: str, name: str,
                   retry: RetryPolicy = WATCH_RETRY) -> AsyncIterator[asyncio.Queue[Report]]:
    """The reports of the endpoint's shared watch for the VM ``uuid`` named ``name``."""
    key = endpoint_key(config)
    watch = _WATCHES.get(key)
    if watch is None:
        watch = _WATCHES[key] = EndpointWatch(PrismClient(config, clients), clients.watch_poll, retry)
    queue = watch.add(uuid, name)
    try:
        yield queue
    finally:
        watch.remove(uuid, queue)
        if not watch.waiting and _WATCHES.get(key) is watch:
            del _WATCHES[key]
            await watch.stop()


def endpoint_watch(config: Config) -> EndpointWatch | None:
    """The endpoint's shared watch while a task waits (tests count its rounds)."""
    return _WATCHES.get(endpoint_key(config))
