"""The watch of ``type: azure``: the VMs made from a published image, until one has run and
then stopped. The admin may create the VM in any resource group: one poller per subscription
(and credential) lists the subscription's VMs with their power state (``list_all`` with
``statusOnly``), for every task waiting there; it backs off while nothing changes and ends
with its last waiter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.azure.arm import Arm, Clients, credential_identity
from adapters.azure.azure_config import AzureConfig
from adapters.base import AdapterError, Backoff, error_for_waiter
from bot.logcontext import detached_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmPower:
    id: str
    name: str
    #: the instance view's PowerState (running, stopped, deallocated, starting, ...), or None
    power: str | None
    #: its ``timeCreated`` (epoch seconds), None when not given
    created: float | None = None


def image_of(vm: Any) -> str | None:
    ref = ((vm.get("properties") or {}).get("storageProfile") or {}).get("imageReference") or {}
    return str(ref["id"]).lower() if ref.get("id") else None


def created_of(vm: Any) -> float | None:
    text = (vm.get("properties") or {}).get("timeCreated")
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def power_of(vm: Any) -> str | None:
    view = (vm.get("properties") or {}).get("instanceView") or {}
    for status in view.get("statuses") or []:
        code = str(status.get("code") or "")
        if code.startswith("PowerState/"):
            return code.split("/", 1)[1]
    return None


@dataclass(eq=False)
class Waiter:
    """One waiting task: the VMs made from its image at each listing, or the poller's error."""

    image_id: str
    latest: list[VmPower] | AdapterError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, found: list[VmPower] | AdapterError) -> None:
        self.latest = found
        self.changed.set()

    async def next(self) -> list[VmPower]:
        await self.changed.wait()
        self.changed.clear()
        if isinstance(self.latest, AdapterError):
            raise self.latest
        return list(self.latest or [])


class SubscriptionPoller:
    def __init__(self, arm: Arm, clients: Clients) -> None:
        self.arm = arm
        self.clients = clients
        self.waiters: list[Waiter] = []
        self.listings = 0
        self.task: asyncio.Task[None] | None = None

    async def _list(self) -> list[Any]:
        async def listing(client: Any) -> list[Any]:
            return [vm async for vm in client.virtual_machines.list_all(status_only="true")]

        return await self.arm.call(
            listing, f"listing the VMs of subscription {self.arm.cfg.subscription_id}",
            self.clients.watch_retry)

    async def run(self) -> None:
        backoff = Backoff(self.clients.watch_first, self.clients.watch_longest)
        last: dict[str, list[VmPower]] | None = None
        while self.waiters:
            try:
                vms = await self._list()
            except Exception as exc:  # past the retry budget, a bug, an SDK surprise: all fail
                if not isinstance(exc, AdapterError):
                    log.exception("Azure: the VM watch failed")
                self._fail(exc)
                return
            self.listings += 1
            by_image: dict[str, list[VmPower]] = {}
            for vm in vms:
                image = image_of(vm)
                if image is not None:
                    by_image.setdefault(image, []).append(
                        VmPower(str(vm["id"]), str(vm.get("name")), power_of(vm), created_of(vm)))
            if by_image != last:
                backoff.reset()
            last = by_image
            for waiter in list(self.waiters):
                waiter.deliver(by_image.get(waiter.image_id, []))
            await backoff.sleep()

    def _fail(self, error: Exception) -> None:
        for waiter in self.waiters:
            waiter.deliver(error_for_waiter(error, "Azure: the VM watch"))


class Watches:
    """The pollers of this process, one per (endpoint, subscription, credential, clients,
    event loop)."""

    def __init__(self) -> None:
        self.pollers: dict[tuple[Hashable, ...], SubscriptionPoller] = {}

    @staticmethod
    def key(cfg: AzureConfig, clients: Clients) -> tuple[Hashable, ...]:
        return (cfg.arm_endpoint.lower(), cfg.subscription_id.lower(), credential_identity(cfg),
                clients, asyncio.get_running_loop())

    @contextlib.asynccontextmanager
    async def watch(self, cfg: AzureConfig, clients: Clients, image_id: str
                    ) -> AsyncIterator[Waiter]:
        key = self.key(cfg, clients)
        poller = self.pollers.get(key)
        if poller is None:
            poller = self.pollers[key] = SubscriptionPoller(Arm(cfg, clients), clients)
        waiter = Waiter(image_id.lower())
        poller.waiters.append(waiter)
        if poller.task is None or poller.task.done():
            poller.task = detached_task(poller.run(), name=f"azure-watch {cfg.subscription_id}")
        try:
            yield waiter
        finally:
            poller.waiters.remove(waiter)
            if not poller.waiters:
                self.pollers.pop(key, None)
                poller.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller.task
                await poller.arm.close()


WATCHES = Watches()
