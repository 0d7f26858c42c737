"""Resources taken away from a runner mid-task (issue 18 part 3): each ends in a clear failure
(the task's error says what and where) or a clean resume, never a task stuck in a working
state, and leaves no temp files."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.catalog import load_catalog
from bot.cli.commands import main
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.model import StoreError
from bot.store.states import EventKind
from bot.store.task_store import BUSY_SECONDS_ENV, TaskStore
from tests.faults.sites import layerbot, site, temp_files, with_read_only, with_small_cache
from tests.store.workers import start_worker, stop_workers, wait_finished


def only_task(root: Path) -> tuple[str, str, str | None]:
    store = TaskStore(root / "layerbot.db")
    try:
        [task] = store.list_tasks()
        return task.id, task.status, task.error
    finally:
        store.close()


def shown_by_layerbot_task(root: Path, task_id: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(root / "layerbot.db"), "task", task_id],
                                terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_cache_filling_up_mid_composite_fails_the_task_saying_which_folder(tmp_path: Path) -> None:
    site(tmp_path)
    # 1 MiB: the layers and the sparse raw disk fit, the qcow2 conversion does not
    run = with_small_cache(tmp_path, "1m", layerbot(tmp_path, "publish", "--yes", "desk"))
    assert run.returncode == 1, (run.stdout, run.stderr)
    task_id, status, error = only_task(tmp_path)
    assert status == states.FAILED
    full = re.escape(f"no space left on this machine's disk while converting the disk to qcow2: "
                     f"{tmp_path / 'cache' / 'tmp'} has ")
    assert error is not None and re.fullmatch(full + r"\d MiB free; free some space there and publish again",
                                              error), error
    assert error in shown_by_layerbot_task(tmp_path, task_id)
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []
    assert not (tmp_path / "published").exists() or not any((tmp_path / "published").rglob("*.qcow2"))


def test_a_cache_on_its_own_filesystem_publishes_to_a_folder_on_another(tmp_path: Path) -> None:
    """Not a fault but the set-up of one: the cache on a filesystem of its own (here the 16 MiB
    tmpfs the disk-full test fills) and the target folder on another."""
    site(tmp_path)
    run = with_small_cache(tmp_path, "16m", layerbot(tmp_path, "publish", "--yes", "desk"))
    task_id, status, error = only_task(tmp_path)
    assert (run.returncode, status, error) == (0, states.DONE, None), run.stdout
    published = tmp_path / "published" / "desk" / f"{task_id}.qcow2"
    assert published.read_bytes() == next((tmp_path / "cache-after" / "images").glob("*.qcow2")).read_bytes()
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []


def test_an_unwritable_work_dir_fails_the_task_naming_it(tmp_path: Path) -> None:
    site(tmp_path)
    run = with_read_only(tmp_path, "work", layerbot(tmp_path, "publish", "--yes", "desk"))
    assert run.returncode == 1, (run.stdout, run.stderr)
    task_id, status, error = only_task(tmp_path)
    assert (status, error) == (states.FAILED, (
        f"cannot create a build folder in the work dir {tmp_path / 'work'}: Read-only file system; make it "
        "writable by the user layerbot runs as, or set runner.work_dir in the catalog"))
    assert error in shown_by_layerbot_task(tmp_path, task_id)
    assert "Traceback" not in run.stderr
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []


def hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding a write transaction on the SQLite database for ``seconds``;
    returns once it holds it."""
    code = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(float(sys.argv[2])); "
            "c.execute('ROLLBACK')")
    locker = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    return locker


def test_a_sqlite_database_locked_past_the_busy_timeout_mid_task_is_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = site(tmp_path, lease_seconds=3)
    monkeypatch.setenv(BUSY_SECONDS_ENV, "1")
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    try:
        task = enqueue(store, plan(load_catalog(config), "desk", check_cache=False), requested_by="alice")[0]
        worker = start_worker(config, str(db), tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 60
            while store.get(task.id).status == states.QUEUED:
                assert time.monotonic() < deadline and worker.poll() is None, worker.log.read_text()
                time.sleep(0.01)
            locker = hold_write_lock(db, 5)  # the busy timeout 5 times over, the lease too
            locker.communicate(timeout=30)
            assert locker.returncode == 0
            wait_finished(store, [task.id], 60, [worker])
        finally:
            codes = stop_workers([worker])
        log = worker.log.read_text()
        assert codes == [0], log[-3000:]
        assert "database is locked" in log, log[-3000:]  # the fault did hit the task
        assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
        assert store.get(task.id).status == states.DONE, store.get(task.id)
        kinds = [e.kind for e in store.events(task.id)]
        assert EventKind.RESUMED in kinds and kinds.count(EventKind.DONE) == 1, kinds
        assert temp_files(tmp_path / "cache", tmp_path / "work") == []
    finally:
        store.close()


@pytest.mark.parametrize("setting", ["soon", "0", "-1"])
def test_a_bad_busy_timeout_setting_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv(BUSY_SECONDS_ENV, setting)
    with pytest.raises(StoreError) as refused:
        TaskStore(tmp_path / "layerbot.db")
    assert str(refused.value) == f"{BUSY_SECONDS_ENV}={setting!r}: a number of seconds, more than 0"


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.parametrize("jump", ["+1h", "-1h"])
def test_a_task_left_by_a_dead_runner_is_resumed_after_the_clock_jumps_an_hour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jump: str) -> None:
    """A runner dies holding a task's lease; the machine's clock then steps an hour (NTP):
    the next runner (libfaketime: its wall clock, not its monotonic one, as a clock step)
    resumes the task within seconds, never an hour later."""
    assert LIBFAKETIME.exists(), "libfaketime is missing: apt-get install faketime"
    config = site(tmp_path, lease_seconds=3)
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    try:
        task = enqueue(store, plan(load_catalog(config), "desk", check_cache=False), requested_by="alice")[0]
        first = start_worker(config, str(db), tmp_path / "first.log")
        deadline = time.monotonic() + 60
        while store.get(task.id).status == states.QUEUED:
            assert time.monotonic() < deadline and first.poll() is None, first.log.read_text()
            time.sleep(0.01)
        first.kill()
        first.wait()
        assert store.get(task.id).lease_owner is not None
        monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))
        monkeypatch.setenv("FAKETIME", jump)
        monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
        second = start_worker(config, str(db), tmp_path / "second.log")
        try:
            wait_finished(store, [task.id], 30, [second])
        finally:
            codes = stop_workers([second])
        assert codes == [0], second.log.read_text()[-3000:]
        kinds = [e.kind for e in store.events(task.id)]
        assert store.get(task.id).status == states.DONE and kinds.count(EventKind.DONE) == 1, kinds
        assert EventKind.RESUMED in kinds, kinds
        assert temp_files(tmp_path / "cache", tmp_path / "work") == []
    finally:
        store.close()


@pytest.mark.parametrize("jump", ["+1h", "-1h"])
def test_a_runner_whose_clock_jumps_an_hour_mid_task_finishes_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jump: str) -> None:
    """The runner's wall clock steps an hour while it composites (libfaketime re-reading its
    offset from a file): its lease, renewed on that clock, still holds, and the task is done
    once by it, not left or resumed."""
    config = site(tmp_path, lease_seconds=3)
    db = tmp_path / "layerbot.db"
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    store = TaskStore(db)
    try:
        task = enqueue(store, plan(load_catalog(config), "desk", check_cache=False), requested_by="alice")[0]
        monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))
        monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(offset))
        monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
        monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
        worker = start_worker(config, str(db), tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 60
            while store.get(task.id).status == states.QUEUED:
                assert time.monotonic() < deadline and worker.poll() is None, worker.log.read_text()
                time.sleep(0.01)
            offset.write_text(f"{jump}\n")
            wait_finished(store, [task.id], 30, [worker])
        finally:
            codes = stop_workers([worker])
        assert codes == [0], worker.log.read_text()[-3000:]
        kinds = [e.kind for e in store.events(task.id)]
        assert store.get(task.id).status == states.DONE and kinds.count(EventKind.DONE) == 1, kinds
        assert EventKind.RESUMED not in kinds, kinds
        [done] = [e for e in store.events(task.id) if e.kind == EventKind.DONE]
        assert abs(done.at - task.created_at) > 3000  # the runner's clock did jump mid-task
        assert temp_files(tmp_path / "cache", tmp_path / "work") == []
    finally:
        store.close()
