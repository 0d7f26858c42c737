"""The job runner end to end: real compositor, local and fake targets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import adapters
from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.runner.planning import PlanError, enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore
from tests.fake_adapter import with_fake

adapters.register("fake", "tests.fake_adapter")

def queue(store: TaskStore, catalog: Catalog, name: str = "win10-office") -> str:
    return enqueue(store, plan(catalog, name), requested_by="alice")[0].id


async def run_until_finished(store: TaskStore, catalog: Catalog, ids: list[str],
                             timeout: float = 120) -> None:
    runner = JobRunner(store, catalog, poll_interval=0.05)
    await asyncio.wait_for(runner.run(only=ids, until_done=True), timeout)


def kinds(store: TaskStore, task_id: str) -> list[str]:
    return [e.kind for e in store.events(task_id) if e.kind != "progress"]


async def test_publish_to_local_folder_reaches_done(catalog: Catalog, store: TaskStore,
                                                    catalog_dir: Path) -> None:
    task_id = queue(store, catalog)
    await run_until_finished(store, catalog, [task_id])
    task = store.get(task_id)
    assert task.status == states.DONE, task.error
    assert kinds(store, task_id) == ["created", "stage", "composited", "stage", "disk_created",
                                     "next_steps", "done"]  # no guest to log into: no hint
    out = catalog_dir / "published" / "win10-office" / f"{task_id}.qcow2"
    assert task.link == out.resolve().as_uri()
    info = json.loads(subprocess.check_output(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(out)]))
    assert info["virtual-size"] == 1 << 30
    assert not list(out.parent.glob("*.partial"))
    # publishing the unchanged template again reuses the composited disk
    again = queue(store, catalog)
    await run_until_finished(store, catalog, [again])
    assert "cache_hit" in kinds(store, again)
    assert store.get(again).status == states.DONE


async def test_failed_upload_is_cleaned_up_and_explained(write_catalog: Callable[[str], Path],
                                                        store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake("fail_upload: true")))
    task_id = queue(store, cat)
    await run_until_finished(store, cat, [task_id])
    task = store.get(task_id)
    assert task.status == states.FAILED
    assert task.error == "the datastore went away (simulated)"
    assert not list((catalog_dir / "vms").glob("*.vm"))
    last = store.events(task_id)[-1]
    assert last.kind == "failed"
    assert last.message == ("Failed: the datastore went away (simulated); cleaned up: "
                            f"VM {task.image_name}.vm")


async def test_cancel_during_upload_removes_the_partial_vm(write_catalog: Callable[[str], Path],
                                                          store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake("block_upload: true")))
    task_id = queue(store, cat)
    runner = JobRunner(store, cat, poll_interval=0.05)
    work = asyncio.create_task(runner.run(only=[task_id], until_done=True))
    for _ in range(600):
        if list((catalog_dir / "vms").glob("*.vm")):
            break
        await asyncio.sleep(0.05)
    store.request_cancel(task_id, "bob", "Cancel requested by bob")
    await asyncio.wait_for(work, 30)
    assert store.get(task_id).status == states.CANCELLED
    assert not list((catalog_dir / "vms").glob("*.vm"))
    assert store.events(task_id)[-1].message.startswith("Cancelled; cleaned up: VM ")


async def test_watch_until_the_guest_powers_off(write_catalog: Callable[[str], Path],
                                               store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    runner = JobRunner(store, cat, poll_interval=0.05)
    work = asyncio.create_task(runner.run(only=[task_id], until_done=True))
    for _ in range(600):
        if store.get(task_id).status == states.ACTION_REQUIRED:
            break
        await asyncio.sleep(0.05)
    assert store.get(task_id).status == states.ACTION_REQUIRED
    vm = next((catalog_dir / "vms").glob("*.vm"))
    Path(f"{vm}.off").touch()
    await asyncio.wait_for(work, 30)
    assert store.get(task_id).status == states.DONE
    assert kinds(store, task_id)[-3:] == ["waiting", "guest", "done"]
    assert vm.exists()  # a finished VM is kept


def _worker(config: Path, db: Path, log: Path) -> subprocess.Popen[bytes]:
    code = ("import adapters, sys; adapters.register('fake', 'tests.fake_adapter');"
            "from bot.cli.commands import main; sys.argv[0] = 'layerbot'; main()")
    with log.open("ab") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-c", code, "--config", str(config), "--db", str(db), "worker"],
            cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL, stderr=stderr,
        )


def resume_to_done(config: Path, db: Path, log: Path, store: TaskStore, task_id: str,
                   catalog_dir: Path) -> None:
    """A second worker process takes the task over: the fake VM is created (once), the test
    powers it off, and the task reaches Done."""
    second = _worker(config, db, log)
    try:
        deadline = time.monotonic() + 120
        while store.get(task_id).status != states.ACTION_REQUIRED:
            assert time.monotonic() < deadline, (store.get(task_id), log.read_text())
            assert second.poll() is None, log.read_text()
            time.sleep(0.05)
        [vm] = (catalog_dir / "vms").glob("*.vm")
        Path(f"{vm}.off").touch()
        while store.get(task_id).status != states.DONE:
            assert time.monotonic() < deadline, store.get(task_id)
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)


def test_a_killed_runner_is_resumed_by_another_and_the_task_completes_once(
        write_catalog: Callable[[str], Path], tmp_path: Path, catalog_dir: Path) -> None:
    config = write_catalog(with_fake("upload_seconds: 30"))
    cat = load_catalog(config)
    db = tmp_path / "shared.db"
    store = TaskStore(db)
    task_id = queue(store, cat)
    log = tmp_path / "workers.log"
    first = _worker(config, db, log)
    try:
        deadline = time.monotonic() + 120
        while store.get(task_id).status != states.UPLOADING or not store.get(task_id).resources:
            assert time.monotonic() < deadline, "the first runner never started uploading"
            assert first.poll() is None, log.read_text()
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    write_catalog(with_fake("upload_seconds: 0.2"))  # the second attempt is quick
    resume_to_done(config, db, log, store, task_id, catalog_dir)
    events = kinds(store, task_id)
    assert events.count("done") == 1
    assert events.count("disk_created") == 1
    assert "resumed" in events and "cleanup" in events
    assert store.get(task_id).attempts == 2


async def test_an_adapter_that_cannot_be_set_up_fails_the_task_once(
        write_catalog: Callable[[str], Path], store: TaskStore) -> None:
    cat = load_catalog(write_catalog(with_fake("broken: true")))
    with pytest.raises(PlanError, match="connector 'fake-hv' cannot be used: cannot load"):
        plan(cat, "win10-office")
    task_id, _ = store.create_task(template="win10-office", connector="fake-hv", platform="Fake",
                                   image_name="x", requested_by="alice", message="queued")
    task_id = task_id.id
    await run_until_finished(store, cat, [task_id], timeout=30)
    task = store.get(task_id)
    assert task.status == states.FAILED and task.attempts == 1
    # the exception's text is in the log under the reference, not in the task
    assert re.fullmatch(r"layerbot hit an unexpected error \(reference `[0-9a-f]{6}`\)\. .*",
                        task.error or ""), task.error


async def test_a_task_whose_runners_keep_dying_gives_up(catalog: Catalog, store: TaskStore) -> None:
    task_id = queue(store, catalog)
    for _ in range(catalog.runner.max_attempts):  # runners that claimed it and died
        store.claim("dead", 0.0)
    await run_until_finished(store, catalog, [task_id], timeout=30)
    task = store.get(task_id)
    assert task.status == states.FAILED
    assert task.error is not None and task.error.startswith(
        f"gave up: the runners working this task died {catalog.runner.max_attempts} times")


async def test_a_runner_sweeps_what_dead_runners_left(catalog: Catalog, store: TaskStore) -> None:
    from compositor.sweep import BUILD_PREFIX, host_name

    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = catalog.runner.work_dir / f"{BUILD_PREFIX}{host_name()}-{dead.pid}-abcdefgh"
    (leftover / "root" / "etc").mkdir(parents=True)
    (leftover / "root" / "etc" / "big").write_bytes(b"x" * 4096)
    task_id = queue(store, catalog)
    await run_until_finished(store, catalog, [task_id])
    assert not leftover.exists()
    assert store.get(task_id).status == states.DONE


@pytest.mark.parametrize("max_parallel", [1, 2])
async def test_max_parallel_bounds_the_tasks_worked_at_once(
        write_catalog: Callable[[str], Path], store: TaskStore, monkeypatch: pytest.MonkeyPatch,
        max_parallel: int) -> None:
    text = with_fake("fail_upload: true\nupload_seconds: 0.4").replace(
        "max_parallel: 2", f"max_parallel: {max_parallel}")
    cat = load_catalog(write_catalog(text))
    ids = [queue(store, cat), queue(store, cat)]
    running = peak = 0
    real_run_job = JobRunner._run_job

    async def counting(self: JobRunner, task: object) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await real_run_job(self, task)  # type: ignore[arg-type]
        finally:
            running -= 1

    monkeypatch.setattr(JobRunner, "_run_job", counting)
    await run_until_finished(store, cat, ids)
    assert [store.get(i).status for i in ids] == [states.FAILED, states.FAILED]
    assert peak == max_parallel  # 2 shows the count sees overlapping tasks
    if max_parallel == 1:
        # one after the other: every event of the older task (after "created") comes first
        worked = {i: [e.id for e in store.events(i) if e.kind != "created"] for i in ids}
        assert max(worked[ids[0]]) < min(worked[ids[1]])


async def test_a_task_recorded_in_the_old_dict_format_is_resumed_and_cleaned_up(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    """Rows written before resources were typed hold a dict: the adapter reads it, the
    partial VM it names is removed, and the task is published again."""
    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    old_vm = catalog_dir / "vms" / "left-by-a-dead-runner.vm"
    old_vm.parent.mkdir(parents=True)
    old_vm.write_bytes(b"half")
    assert store.claim("dead-runner", 0.01) is not None
    for status in (states.COMPOSITING, states.UPLOADING):
        store.update(task_id, "dead-runner", status=status)
    store.db.execute("UPDATE tasks SET resources = ? WHERE id = ?",
                     [json.dumps({"vm": str(old_vm)}), task_id])
    stop = asyncio.Event()
    runner = JobRunner(store, cat, poll_interval=0.05)
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop))
    try:
        async with asyncio.timeout(60):
            while store.get(task_id).status != states.ACTION_REQUIRED:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(work, 30)
    assert not old_vm.exists()
    resumed = [e.message for e in store.events(task_id) if e.kind == "resumed"]
    assert resumed[-1] == ("Removed partial upload of the previous attempt: "
                           "VM left-by-a-dead-runner.vm")
    [kind] = {r["kind"] for r in store.get(task_id).resources}  # the list format from now on
    assert kind == "fake.vm"


async def test_a_task_whose_runner_died_after_publishing_loses_its_staging_not_its_vm(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    """The previous runner published (the VM and the upload that fed it are recorded, the
    result is stored) and died before removing the upload: the runner that takes the task
    over removes the staging upload, keeps the VM and watches it to Done."""
    from tests.fake_adapter import FakeUpload, FakeVm

    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    vms = catalog_dir / "vms"
    vms.mkdir()
    vm, upload = vms / "published.vm", vms / "published.upload"
    vm.write_bytes(b"vm")
    upload.write_bytes(b"blob")
    Path(f"{vm}.off").touch()  # the guest already ran its scripts
    assert store.claim("dead-runner", 0.01) is not None
    store.update(task_id, "dead-runner", status=states.COMPOSITING)
    store.update(task_id, "dead-runner", status=states.UPLOADING,
                 resources=[FakeVm(path=vm).to_json(), FakeUpload(path=upload).to_json()],
                 published={"link": vm.as_uri(), "summary": "VM published",
                            "resource": FakeVm(path=vm).to_json()})
    await run_until_finished(store, cat, [task_id], timeout=60)
    task = store.get(task_id)
    assert task.status == states.DONE
    assert not upload.exists()  # staging: removed after the success
    assert vm.exists()  # partial, and the publish succeeded: kept
    assert task.resources == [FakeVm(path=vm).to_json()]
    assert "disk_created" not in kinds(store, task_id)  # not published a second time


async def test_a_layer_this_machine_cannot_read_fails_the_task_naming_the_machine_and_path(
        catalog: Catalog, store: TaskStore, catalog_dir: Path) -> None:
    """A worker whose share went away after it started: the task fails at once (no hang), and
    says where — the path and this machine (layers may sit on a share other machines see)."""
    import socket

    task_id = queue(store, catalog)
    layer = catalog_dir / "layers" / "os.tar"
    layer.unlink()  # the mount is gone
    await run_until_finished(store, catalog, [task_id], timeout=60)
    task = store.get(task_id)
    assert task.status == states.FAILED
    assert str(layer) in (task.error or "") and f"(on {socket.gethostname()})" in (task.error or "")
