"""A template on a ``type: nutanix`` connector through the JobRunner: the compositor's qcow2 goes
to the Prism double, the task waits in ``action_required`` and reaches ``done`` once the VM
was powered on and off, also when the runner restarts during the watch; and a cancel at the
VM step leaves nothing in Prism."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.task_store import TaskStore
from tests.conftest import BASIC_CATALOG
from tests.test_runner import kinds, queue
from tests.vsphere.test_vsphere_runner import guest_notes, wait_until, watching

from .conftest import CLUSTER, CONTAINER, FAST, SUBNET
from .prism_double import PrismDouble

pytestmark = pytest.mark.timeout(180)


def with_nutanix(double: PrismDouble, ca_file: Path) -> str:
    settings = {"type": "nutanix", "prism_url": double.url, "user_env": "PRISM_USER",
                "password_env": "PRISM_PASSWORD", "ca_file": str(ca_file), "cluster": CLUSTER,
                "container": CONTAINER, "subnet": SUBNET, "scripts": ["scripts/setup.sh"]}
    line = f"  ahv-lab: {json.dumps(settings)}\n"  # JSON is YAML (flow mapping)
    text = BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + line, 1)
    return text.replace("connector: folder", "connector: ahv-lab")


@contextlib.asynccontextmanager
async def running(store: TaskStore, cat: Catalog, task_id: str,
                  stop: asyncio.Event | None = None) -> AsyncIterator[asyncio.Task[None]]:
    runner = JobRunner(store, cat, poll_interval=0.05, clients={"nutanix": FAST})
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop, until_done=stop is None))
    try:
        yield work
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


def vm_named(prism: PrismDouble, name: str) -> str | None:
    found = [u for u, vm in prism.vms.items() if vm["spec"]["name"] == name]
    return found[0] if found else None


async def test_restart_during_watch_resumes_and_is_done_once(
        prism: PrismDouble, prism_ca: Any, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    cat = load_catalog(write_catalog(with_nutanix(prism, prism_ca[1])))
    task_id = queue(store, cat)
    stop = asyncio.Event()
    async with running(store, cat, task_id, stop) as first:
        await watching(store, task_id, "waiting for VM", "the first runner's watch to start")
        task = store.get(task_id)
        assert task.status == states.ACTION_REQUIRED, task.error
        events = {e.kind: e for e in store.events(task_id)}
        assert events["next_steps"].message.startswith(
            f"The virtual machine {task.image_name} is created, but off.")
        [(_, _, virtual)] = prism.uploads
        assert virtual == 1 << 30  # disk: {size_gib: 1}, as a qcow2
        uuid = vm_named(prism, task.image_name)
        assert uuid is not None and prism.images == {}  # the staging image went after the publish
        prism.power(uuid, "ON")  # the guest runs its scripts...
        await wait_until(lambda: any(r.get("kind") == "nutanix.powered_on"
                                     for r in store.get(task_id).resources),
                         "the first runner to record ON", 30)
        stop.set()  # ...while the bot goes down
        await asyncio.wait_for(asyncio.shield(first), 30)
    task = store.get(task_id)
    assert task.status == states.ACTION_REQUIRED and task.lease_owner is None
    prism.power(uuid, "OFF")  # and shuts down while no runner watches

    async with running(store, cat, task_id) as second:
        await asyncio.wait_for(asyncio.shield(second), 30)
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    events = kinds(store, task_id)
    assert events.count("done") == 1
    assert "cleanup" not in events and "failed" not in events
    assert guest_notes(store, task_id)[-1] == f"VM {task.image_name} has shut down"
    assert list(prism.vms) == [uuid] and len(prism.uploads) == 1  # not published twice


async def test_cancel_at_the_vm_step_leaves_nothing(
        prism: PrismDouble, prism_ca: Any, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    cat = load_catalog(write_catalog(with_nutanix(prism, prism_ca[1])))
    task_id = queue(store, cat)
    prism.polls_for["create_vm"] = 1 << 20  # the VM's task runs on until the cancel
    async with running(store, cat, task_id) as work:
        await wait_until(lambda: prism.vms != {}, "the VM being created", 60)
        store.request_cancel(task_id, "U0TEST", "cancelled by the test")
        await asyncio.wait_for(asyncio.shield(work), 30)
    task = store.get(task_id)
    assert task.status == states.CANCELLED, task.error
    assert prism.vms == {} and prism.images == {}
