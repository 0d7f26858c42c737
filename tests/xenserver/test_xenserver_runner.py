"""A template on a ``type: xenserver`` connector through the JobRunner: the compositor's dynamic
VHD goes to the double, the task waits in ``action_required`` and reaches ``done`` once the VM
has run and shut down, also when the runner restarts during the watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.task_store import TaskStore
from tests.conftest import BASIC_CATALOG
from tests.test_runner import kinds, queue
from tests.vsphere.test_vsphere_runner import guest_notes, wait_until, watching

from .conftest import connector, short_clients
from .xapi_double import XapiDouble

pytestmark = pytest.mark.timeout(180)


def with_xenserver(double: XapiDouble) -> str:
    settings = {**connector(double), "scripts": ["scripts/setup.sh"]}
    line = f"  xen-lab: {json.dumps(settings)}\n"  # JSON is YAML (flow mapping)
    text = BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + line, 1)
    return text.replace("connector: folder", "connector: xen-lab")


@contextlib.asynccontextmanager
async def running(store: TaskStore, cat: Catalog, task_id: str,
                  stop: asyncio.Event | None = None) -> AsyncIterator[asyncio.Task[None]]:
    runner = JobRunner(store, cat, poll_interval=0.05, clients={"xenserver": short_clients()})
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop, until_done=stop is None))
    try:
        yield work
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


async def test_restart_during_watch_resumes_and_is_done_once(
        xapi: XapiDouble, xen_env: None, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    cat = load_catalog(write_catalog(with_xenserver(xapi)))
    task_id = queue(store, cat)
    stop = asyncio.Event()
    async with running(store, cat, task_id, stop) as first:
        await watching(store, task_id, "waiting for VM", "the first runner's watch to start")
        task = store.get(task_id)
        assert task.status == states.ACTION_REQUIRED, task.error
        events = {e.kind: e for e in store.events(task_id)}
        assert events["next_steps"].message.startswith(
            f"The virtual machine {task.image_name} is created, but off.")
        assert "log in with a local user" in events["hint"].message
        [upload] = xapi.state.uploads
        assert upload.virtual_size == 1 << 30  # disk: {size_gib: 1}, as a dynamic VHD
        xapi.set_power(task.image_name, "Running")  # the guest runs its scripts...
        await wait_until(lambda: any(r.get("kind") == "xenserver.vm_ran"
                                     for r in store.get(task_id).resources),
                         "the first runner to record Running", 30)
        stop.set()  # ...while the bot goes down
        await asyncio.wait_for(asyncio.shield(first), 30)
    task = store.get(task_id)
    assert task.status == states.ACTION_REQUIRED and task.lease_owner is None
    xapi.set_power(task.image_name, "Halted")  # and shuts down while no runner watches

    async with running(store, cat, task_id) as second:
        await asyncio.wait_for(asyncio.shield(second), 30)
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    events = kinds(store, task_id)
    assert events.count("done") == 1 and events.count("disk_created") == 1
    assert "cleanup" not in events and "failed" not in events
    assert guest_notes(store, task_id)[-1] == f"VM {task.image_name} has shut down"
    assert xapi.vm_by_name(task.image_name) is not None  # not published twice, not removed
    assert len(xapi.state.uploads) == 1
