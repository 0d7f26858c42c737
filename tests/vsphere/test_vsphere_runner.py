"""A template on a ``type: vsphere`` connector, end to end through the JobRunner and vcsim.

The runner composites the small BASIC layers (1 GiB disk), imports the VM (or VM template)
into vcsim, waits in ``action_required`` and reaches ``done`` once the guest (or the VM
deployed from the template) has been powered on and off, also across a runner restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters import create
from adapters.vsphere import Clients
from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.task_store import TaskStore
from tests.conftest import BASIC_CATALOG
from tests.test_runner import kinds, queue

from .conftest import VcSim, connector, find_vms, run_task

pytestmark = pytest.mark.timeout(180)

DISK_KB = (1 << 30) // 1024  # disk: {size_gib: 1}


def with_vsphere(sim: VcSim, **overrides: Any) -> str:
    """BASIC_CATALOG with win10-office on a vsphere connector pointing at ``sim``."""
    settings = {**connector(sim, **overrides), "scripts": ["scripts/setup.sh"]}
    line = f"  vcsim-lab: {json.dumps(settings)}\n"  # JSON is YAML (flow mapping)
    text = BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + line, 1)
    return text.replace("connector: folder", "connector: vcsim-lab")


#: Short WaitForUpdatesEx calls, so a detaching runner lets go within seconds.
FAST_WATCH = {"vsphere": Clients(wait_seconds=2)}


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def guest_notes(store: TaskStore, task_id: str) -> list[str]:
    return [e.message for e in store.events(task_id) if e.kind == "guest"]


def the_disk(vm: Any) -> Any:
    from pyVmomi import vim

    [disk] = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return disk


def disk_files(vm: Any) -> list[Path]:
    """The VM's .vmdk files in vcsim's (local directory) datastore."""
    [ds] = vm.datastore
    disk = the_disk(vm)
    folder = disk.backing.fileName.removeprefix(f"[{ds.name}] ").rsplit("/", 1)[0]
    return sorted((Path(ds.info.url) / folder).glob("*.vmdk"))


@contextlib.asynccontextmanager
async def running(store: TaskStore, cat: Catalog, task_id: str,
                  stop: asyncio.Event | None = None) -> AsyncIterator[asyncio.Task[None]]:
    """A JobRunner working task_id (until it is finished, or until ``stop``); cancelled on
    the way out if it is still running."""
    runner = JobRunner(store, cat, poll_interval=0.05, clients=FAST_WATCH)
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop, until_done=stop is None))
    try:
        yield work
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


async def watching(store: TaskStore, task_id: str, note: str, what: str) -> None:
    """Wait until the runner's watch says ``note`` (or the task ended)."""
    await wait_until(lambda: store.get(task_id).status in states.TERMINAL
                     or any(note in n for n in guest_notes(store, task_id)), what)


async def test_vm_mode_reaches_done_when_the_guest_shuts_down(
        vcsim: VcSim, vc_env: None, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    cat = load_catalog(write_catalog(with_vsphere(vcsim)))
    task_id = queue(store, cat)
    async with running(store, cat, task_id) as work:
        await watching(store, task_id, "waiting for VM", "the watch to start")
        task = store.get(task_id)
        assert task.status == states.ACTION_REQUIRED, task.error
        assert kinds(store, task_id) == ["created", "stage", "composited", "stage",
                                         "disk_created", "next_steps", "hint", "waiting", "guest"]

        [vm] = find_vms(vcsim, task.image_name)
        assert vm.runtime.powerState == "poweredOff" and not vm.config.template
        uuid = vcsim.si().content.about.instanceUuid
        link = (f"https://{vcsim.host}:{vcsim.port}/ui/app/vm;nav=v/urn:vmomi:VirtualMachine:"
                f"{vm._moId}:{uuid}")
        assert task.link == link
        events = {e.kind: e for e in store.events(task_id)}
        assert events["disk_created"].message == (
            f"Disk created: VM {task.image_name} (powered off) \u2014 {link}")
        assert events["next_steps"].message.startswith(
            f"The virtual machine {task.image_name} is created, but off.")
        assert "log in with a local user" in events["hint"].message
        assert task.resources == [{"kind": "vsphere.vm", "moref": vm._moId,
                                   "name": task.image_name, "datacenter": "DC0"}]
        assert task.published is not None and task.published["resource"]["moref"] == vm._moId
        disk = the_disk(vm)
        assert disk.capacityInKB == DISK_KB
        assert disk.backing.fileName.startswith(f"[LocalDS_0] {task.image_name}/")
        assert disk_files(vm)

        run_task(vcsim, vm.PowerOnVM_Task())
        await wait_until(lambda: any("is running" in n for n in guest_notes(store, task_id)),
                         "the runner to see the VM running", 30)
        assert store.get(task_id).status == states.ACTION_REQUIRED
        run_task(vcsim, vm.PowerOffVM_Task())
        await asyncio.wait_for(asyncio.shield(work), 30)
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    assert kinds(store, task_id)[-4:] == ["guest", "guest", "guest", "done"]
    assert guest_notes(store, task_id)[-1] == f"VM {task.image_name} has shut down"
    assert len(find_vms(vcsim, task.image_name)) == 1  # a finished VM is kept


@pytest.mark.parametrize("power_on", ["before_restart", "after_restart"])
async def test_restart_during_watch_reaches_done_once(
        vcsim: VcSim, vc_env: None, write_catalog: Callable[[str], Path],
        store: TaskStore, power_on: str) -> None:
    cat = load_catalog(write_catalog(with_vsphere(vcsim)))
    task_id = queue(store, cat)
    stop = asyncio.Event()
    async with running(store, cat, task_id, stop) as first:
        await watching(store, task_id, "waiting for VM", "the first runner's watch to start")
        task = store.get(task_id)
        assert task.status == states.ACTION_REQUIRED, task.error
        [vm] = find_vms(vcsim, task.image_name)
        if power_on == "before_restart":
            run_task(vcsim, vm.PowerOnVM_Task())  # the guest runs its scripts...
            await wait_until(lambda: {"kind": "vsphere.powered_on", "moref": vm._moId}
                             in store.get(task_id).resources,
                             "the first runner to record the power on", 30)
        stop.set()  # ...while the bot goes down
        await asyncio.wait_for(asyncio.shield(first), 30)
    task = store.get(task_id)
    assert task.status == states.ACTION_REQUIRED and task.lease_owner is None
    if power_on == "before_restart":
        run_task(vcsim, vm.PowerOffVM_Task())  # the guest shuts down while no runner watches

    async with running(store, cat, task_id) as second:
        if power_on == "after_restart":
            await wait_until(lambda: guest_notes(store, task_id).count(
                f"waiting for VM {task.image_name} to be powered on and shut down") == 2,
                "the second runner's watch to start")
            await asyncio.sleep(0.3)
            assert store.get(task_id).status == states.ACTION_REQUIRED
            run_task(vcsim, vm.PowerOnVM_Task())
            run_task(vcsim, vm.PowerOffVM_Task())
        await asyncio.wait_for(asyncio.shield(second), 30)
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    events = kinds(store, task_id)
    assert events.count("done") == 1
    assert events.count("disk_created") == 1
    assert events.count("waiting") == 2  # each runner announced its watch
    assert "resumed" in events and "cleanup" not in events and "failed" not in events
    assert task.attempts == 1  # a runner that stops cleanly gives its attempt back
    [again] = find_vms(vcsim, task.image_name)  # not imported twice, not removed
    assert again._moId == vm._moId


async def test_template_mode_reaches_done_when_a_deployed_vm_shuts_down(
        vcsim: VcSim, vc_env: None, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    from pyVmomi import vim

    cat = load_catalog(write_catalog(with_vsphere(vcsim, mode="template")))
    task_id = queue(store, cat)
    async with running(store, cat, task_id) as work:
        await watching(store, task_id, "deployed from the template", "the deploy watch to start")
        task = store.get(task_id)
        assert task.status == states.ACTION_REQUIRED, task.error
        [tpl] = find_vms(vcsim, task.image_name)
        assert tpl.config.template
        events = {e.kind: e for e in store.events(task_id)}
        assert events["disk_created"].message.startswith(
            f"Disk created: VM template {task.image_name} \u2014 https://")
        assert events["next_steps"].message.startswith(
            f"Create a VM from the VMware Virtual Machine template {task.image_name}")
        disk = the_disk(tpl)
        assert disk.capacityInKB == DISK_KB
        assert disk.backing.fileName.startswith(f"[LocalDS_0] {task.image_name}/")
        assert disk_files(tpl)

        pool = find_vms(vcsim, "DC0_C0_RP0_VM0")[0].resourcePool
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False)
        clone = run_task(vcsim, tpl.CloneVM_Task(folder=tpl.parent, name="desk-r", spec=spec))
        clone = vim.VirtualMachine(clone._moId, vcsim.si()._stub)
        await wait_until(lambda: {"kind": "vsphere.deployed_vm", "moref": clone._moId}
                         in store.get(task_id).resources,
                         "the runner to find the deployed VM", 30)
        run_task(vcsim, clone.PowerOnVM_Task())
        run_task(vcsim, clone.PowerOffVM_Task())
        await asyncio.wait_for(asyncio.shield(work), 30)
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    assert kinds(store, task_id).count("done") == 1
    assert guest_notes(store, task_id)[-1] == "VM desk-r has shut down"


def with_templates(sim: VcSim, names: list[str]) -> str:
    """with_vsphere's catalog with one template per name (the same layers) on the vcsim
    connector, and the default max_parallel (2)."""
    text = with_vsphere(sim)
    start = text.index("  win10-office:\n")
    end = text.index("runner:\n")
    block = text[start:end]
    return text[:start] + "".join(block.replace("win10-office:", f"{n}:", 1)
                                  for n in names) + text[end:]


async def test_five_templates_all_wait_at_once_and_each_reaches_done_on_its_own(
        vcsim: VcSim, vc_env: None, write_catalog: Callable[[str], Path],
        store: TaskStore) -> None:
    import threading

    from adapters.blocking import SessionPool
    from adapters.vsphere import power as vsphere_power

    pool: SessionPool[Any] = SessionPool()  # this test's sessions, whatever others hold
    clients = {"vsphere": Clients(wait_seconds=2, sessions=pool)}

    def watch_threads() -> int:
        return sum(t.name.startswith("vsphere-watch") for t in threading.enumerate())

    def current_watcher() -> Any:
        sessions = [session for _key, session, _users in pool.shared()]
        return vsphere_power._WATCHERS.get(sessions[0]) if sessions else None

    names = [f"t{i}" for i in range(5)]
    cat = load_catalog(write_catalog(with_templates(vcsim, names)))
    assert cat.runner.max_parallel == 2
    ids = [queue(store, cat, name) for name in names]
    # none of the VMs has been powered on, yet all five wait for their guests
    stop = asyncio.Event()
    first = asyncio.create_task(JobRunner(store, cat, poll_interval=0.05, clients=clients).run(
        only=ids, stop=stop))
    try:
        for task_id in ids:
            await watching(store, task_id, "waiting for VM", "every watch to start")
        assert [store.get(i).status for i in ids] == [states.ACTION_REQUIRED] * 5
        vms = [find_vms(vcsim, store.get(i).image_name)[0] for i in ids]
        assert all(vm.runtime.powerState == "poweredOff" for vm in vms)
        # one session, one collector and one watch thread for the five VMs
        watcher = current_watcher()
        await wait_until(lambda: watcher.watched == 5, "the five watches", 30)
        assert watcher.collectors == 1 and watch_threads() == 1
        stop.set()  # the runner stops while every task waits; each is left for the next
        await asyncio.wait_for(asyncio.shield(first), 30)
    finally:
        stop.set()
        await asyncio.gather(first, return_exceptions=True)
    assert all(store.get(i).lease_owner is None for i in ids)
    assert watcher.watched == 0
    # the runner closed its adapters: the last one logged the session out (planning holds none)
    assert pool.shared() == []

    runner = JobRunner(store, cat, poll_interval=0.05, clients=clients)
    work = asyncio.create_task(runner.run(only=ids, until_done=True))
    try:
        await wait_until(lambda: getattr(current_watcher(), "watched", 0) == 5,
                         "the second runner's five watches", 60)
        watcher = current_watcher()
        assert watcher.collectors == 1 and watch_threads() == 1
        for i in (3, 0, 4, 1, 2):
            run_task(vcsim, vms[i].PowerOnVM_Task())
        for i in (3, 0, 4, 1, 2):
            await wait_until(lambda i=i: any("is running" in n for n in guest_notes(store, ids[i])),
                             f"the runner to see {names[i]}'s VM running", 30)
        done: set[int] = set()
        for i in (1, 4, 0, 2, 3):
            run_task(vcsim, vms[i].PowerOffVM_Task())
            await wait_until(lambda i=i: store.get(ids[i]).finished, f"{names[i]} to finish", 30)
            done.add(i)
            assert [store.get(t).status for t in ids] == [
                states.DONE if n in done else states.ACTION_REQUIRED for n in range(5)]
        await asyncio.wait_for(asyncio.shield(work), 30)
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    for task_id in ids:
        events = kinds(store, task_id)
        assert events.count("done") == 1 and events.count("disk_created") == 1
        assert events.count("waiting") == 2 and "resumed" in events
    assert watcher.watched == 0 and watcher.collectors == 1  # one per runner, none per VM
    await wait_until(lambda: watch_threads() == 0, "the watch thread to end", 10)


async def test_planning_a_publish_releases_the_vcenter_session(
        vcsim: VcSim, vc_env: None, write_catalog: Callable[[str], Path]) -> None:
    """/publish plans with an adapter and closes it: the shared session's users go back to
    zero and it logs out (each /publish used to leak a share)."""
    from adapters.vsphere.session import SESSIONS
    from bot.runner.planning import plan

    cat = load_catalog(write_catalog(with_vsphere(vcsim)))
    def shares() -> list[int]:
        return [users for key, _session, users in SESSIONS.shared()
                if key.endpoint == f"{vcsim.host}:{vcsim.port}"]

    # planned from a coroutine: the close runs on a thread of its own
    for _ in range(3):
        assert plan(cat, "win10-office", check_cache=False).platform == "VMware vSphere"
        assert shares() == []
    # and while a runner's adapter holds the session, planning leaves its share as it was
    adapter = create(cat.connectors["vcsim-lab"])
    try:
        assert plan(cat, "win10-office", check_cache=False).disk_format == "raw"
        assert shares() == [1]
    finally:
        await adapter.close()
    assert shares() == []
