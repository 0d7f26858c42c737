"""The VM watch of ``type: azure``: a VM made in any resource group of the subscription, one
that ran and stopped while nobody watched, and a poller failure reaching every waiter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters import create
from adapters.azure.publish import AzureAdapterBase
from adapters.azure.vm_watch import WATCHES, SubscriptionPoller, Waiter
from adapters.base import PlatformError, Watcher, publish
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import Tls, arm_double, arm_tls, clients, config
from tests.azure.test_azure_publish import compute, context, vhd

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]


async def make_vm(client: Any, group: str, name: str, image_id: str) -> None:
    body = {"location": "westeurope", "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
        "storageProfile": {"imageReference": {"id": image_id}}}}
    await (await client.virtual_machines.begin_create_or_update(group, name, body)).result()


async def test_a_vm_in_another_group_that_ran_and_stopped_unwatched_is_done(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    adapter = create(config(arm_double), clients(arm_double, arm_tls))
    assert isinstance(adapter, AzureAdapterBase) and isinstance(adapter, Watcher)
    ctx = context(vhd(tmp_path / "w.vhd"), "watched")
    try:
        published = await publish(adapter, ctx)
        [image] = arm_double.images.values()
        client = await compute(arm_double, arm_tls)
        async with client:  # made, run and shut down before any runner watches
            await make_vm(client, "admins-vms", "vm-elsewhere", image["id"])
            await (await client.virtual_machines.begin_deallocate("admins-vms",
                                                                  "vm-elsewhere")).result()
        await asyncio.wait_for(adapter.wait_for_shutdown(published, ctx), 30)
    finally:
        await adapter.close()


async def test_an_unexpected_poller_error_reaches_the_waiters(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = create(config(arm_double), clients(arm_double, arm_tls))
    assert isinstance(adapter, AzureAdapterBase) and isinstance(adapter, Watcher)
    ctx = context(vhd(tmp_path / "e.vhd"), "broken")

    async def broken(self: SubscriptionPoller) -> list[Any]:
        raise KeyError("properties")
    try:
        published = await publish(adapter, ctx)
        monkeypatch.setattr(SubscriptionPoller, "_list", broken)
        with pytest.raises(PlatformError, match="the VM watch failed: 'properties' is missing"):
            await asyncio.wait_for(adapter.wait_for_shutdown(published, ctx), 30)
        assert WATCHES.pollers == {}
    finally:
        await adapter.close()


async def test_each_waiter_gets_its_own_error(arm_double: ArmDouble, arm_tls: Tls,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One exception object raised in two tasks would chain their tracebacks into each other."""
    async def broken(self: SubscriptionPoller) -> list[Any]:
        raise KeyError("properties")

    async def next_error(waiter: Waiter) -> BaseException:
        with pytest.raises(PlatformError) as raised:
            await waiter.next()
        return raised.value

    monkeypatch.setattr(SubscriptionPoller, "_list", broken)
    cfg, azure_clients = config(arm_double), clients(arm_double, arm_tls)
    async with WATCHES.watch(cfg, azure_clients, "/images/a") as a, \
            WATCHES.watch(cfg, azure_clients, "/images/b") as b:
        first, second = await asyncio.wait_for(asyncio.gather(next_error(a), next_error(b)), 30)
    assert first is not second and "the VM watch failed: 'properties' is missing" in str(first)
    assert WATCHES.pollers == {}
