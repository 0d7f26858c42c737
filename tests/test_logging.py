"""The logs: ``--log-level``/``--log-format`` (and their environment variables), JSON lines,
the task fields on every record of a task's work, masking in every JSON field."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import logcontext
from bot.cli import log_setup
from bot.store import states
from bot.store.task_store import TaskStore

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE, CONNECTOR = "win10-office", "folder"  # tests.conftest.BASIC_CATALOG


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERBOT_LOG_")}
    return {**env, **extra}


def command(catalog_dir: Path, db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli.commands", "--config", str(catalog_dir / "layerbot.yml"),
            "--db", str(db), *args]


def layerbot(catalog_dir: Path, db: Path, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(catalog_dir, db, *args), cwd=ROOT, env=env or environment(),
                          capture_output=True, text=True, timeout=180)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line one JSON object with the documented fields."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= record.keys(), line
        assert datetime.fromisoformat(record["ts"]).utcoffset() == timedelta(0), line
        records.append(record)
    return records


def only_task(db: Path) -> Any:
    store = TaskStore(db)
    try:
        [task] = store.list_tasks()
        return task
    finally:
        store.close()


def test_json_logs_of_a_publish_carry_the_task(catalog_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = layerbot(catalog_dir, db, "--log-level", "debug", "--log-format", "json",
                    "publish", TEMPLATE, "--yes")
    assert proc.returncode == 0, proc.stderr
    task = only_task(db)
    records = json_lines(proc.stderr)
    child = [r for r in records if r["message"].startswith("compositor process ")]
    work = [r for r in records if r["logger"].startswith("bot.runner.")] + child
    messages = [r["message"] for r in work]
    assert child  # the compositor process's records, at its parent's level
    assert any(m.startswith(f"claimed {task.id}") for m in messages), messages
    assert any(m.startswith("stage: Compositing") for m in messages), messages
    assert any(m.startswith("disk_created: ") for m in messages), messages
    assert any(m.startswith("done: ") for m in messages), messages
    assert any(r["level"] == "DEBUG" for r in work)  # progress, at --log-level debug
    for record in work:
        assert (record.get("task_id"), record.get("template"), record.get("connector")) == \
            (task.id, TEMPLATE, CONNECTOR), record
    assert all("task_id" not in r for r in records if r not in work)  # asyncio's: no task


def test_text_logs_show_the_task_fields_and_the_level_from_the_environment(
        catalog_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = layerbot(catalog_dir, db, "publish", TEMPLATE, "--yes",
                    env=environment(LAYERBOT_LOG_LEVEL="info"))
    assert proc.returncode == 0, proc.stderr
    task = only_task(db)
    fields = f" bot.runner.task_steps [task={task.id} template={TEMPLATE} connector={CONNECTOR}]: "
    lines = proc.stderr.splitlines()
    assert any(fields + "done: " in line for line in lines), proc.stderr
    assert not any(" DEBUG " in line for line in lines), proc.stderr


def test_a_one_shot_command_logs_warnings_only_by_default(catalog_dir: Path, tmp_path: Path) -> None:
    proc = layerbot(catalog_dir, tmp_path / "t.db", "publish", TEMPLATE, "--yes")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_verbose_is_debug_and_contradicting_it_is_a_usage_error(catalog_dir: Path,
                                                                tmp_path: Path) -> None:
    proc = layerbot(catalog_dir, tmp_path / "t.db", "-v", "--log-format", "json",
                    "publish", TEMPLATE, "--yes")
    assert proc.returncode == 0 and any(r["level"] == "DEBUG" for r in json_lines(proc.stderr))
    proc = layerbot(catalog_dir, tmp_path / "t.db", "-v", "--log-level", "error", "templates")
    assert proc.returncode == 2
    assert "-v means --log-level debug, not also --log-level error" in proc.stderr


@pytest.fixture
def worker_proc(catalog_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    db = tmp_path / "t.db"
    queued = layerbot(catalog_dir, db, "publish", TEMPLATE, "--yes", "--no-run")
    assert queued.returncode == 0, queued.stderr
    proc = subprocess.Popen(command(catalog_dir, db, "worker"), cwd=ROOT, text=True,
                            env=environment(LAYERBOT_LOG_FORMAT="json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc, db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_worker_logs_info_by_default_as_the_environment_says(
        worker_proc: tuple[subprocess.Popen[str], Path]) -> None:
    proc, db = worker_proc
    deadline = time.monotonic() + 120
    while only_task(db).status != states.DONE:
        assert proc.poll() is None and time.monotonic() < deadline, "the worker did not finish the task"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records = json_lines(stderr)
    task = only_task(db)
    done = [r for r in records if r["message"].startswith("done: ")]
    assert done and done[0]["task_id"] == task.id and done[0]["level"] == "INFO"
    assert {r["level"] for r in records} <= {"INFO", "WARNING", "ERROR"}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = log_setup.configure(logging.DEBUG, "json", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_json_records_are_masked_in_every_field_and_stay_json(json_log: io.StringIO) -> None:
    log = logging.getLogger("tests.masking")
    with logcontext.task_context("t0c0ffee", "win10", "lab"):
        try:
            raise RuntimeError('PUT /o?upload_id=Up1oadS3ss1on"quoted\\" failed; Bearer T0k3nV4lue')
        except RuntimeError:
            log.exception("GET https://storage/x?sig=S1gnatureV4lue&x=1 said %s", '"no"')
        log.info("progress", stack_info=True, extra={"task_id": "tOTHER"})
    logged = json_log.getvalue()
    for secret in ("Up1oadS3ss1on", "T0k3nV4lue", "S1gnatureV4lue"):
        assert secret not in logged
    failed, progress = json_lines(logged)
    assert failed["message"] == f'GET https://storage/x?sig={log_setup.MASK}&x=1 said "no"'
    assert failed["level"] == "ERROR" and failed["logger"] == "tests.masking"
    assert "Traceback (most recent call last)" in failed["exc"]
    assert f"upload_id={log_setup.MASK}" in failed["exc"] and f"Bearer {log_setup.MASK}" in failed["exc"]
    assert (failed["task_id"], failed["template"], failed["connector"]) == ("t0c0ffee", "win10", "lab")
    assert "stack" in progress and progress["task_id"] == "tOTHER"  # extra= names another task


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_the_azure_sdk_logs_each_request_only_at_debug(level: int, shown: bool) -> None:
    """azure-core logs every request and response with its headers at INFO: a worker's INFO
    log of an Azure upload would be thousands of those."""
    root, stream = logging.getLogger(), io.StringIO()
    sdk = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    before = root.level, sdk.level
    handler = log_setup.configure(level, "text", stream)
    try:
        sdk.info("Request URL: 'https://acct.blob/c/d.vhd?comp=page&sig=S1gnatureV4lue'")
        sdk.warning("throttled")
        logging.getLogger("adapters.azure.publish").info("sent 4 MiB")
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])
        sdk.setLevel(before[1])
    logged = stream.getvalue()
    assert ("Request URL" in logged) is shown
    assert "throttled" in logged and "sent 4 MiB" in logged and "S1gnatureV4lue" not in logged


async def test_the_compositor_process_log_carries_the_task_fields(json_log: io.StringIO) -> None:
    """The child process has no task context: it sends its records as JSON lines on stderr,
    which a reader task the job's context created logs here again, one record each (its
    traceback in ``exc``, not a record a line), at the child's level, naming the task."""
    from compositor.isolated import WorkerCrashed, _in_child

    with logcontext.task_context("t0c0ffee", "win10", "lab"), pytest.raises(WorkerCrashed):
        await _in_child({"op": "build_image", "spec": {}}, None)  # a bug in the child: KeyError
    child = [r for r in json_lines(json_log.getvalue()) if r["logger"].startswith("compositor.")]
    [crash] = child
    assert crash["logger"] == "compositor.worker" and crash["level"] == "ERROR", crash
    assert crash["message"].endswith(": build_image failed"), crash
    assert "Traceback (most recent call last)" in crash["exc"] and "KeyError: 'layers'" in crash["exc"]
    assert (crash["task_id"], crash["template"], crash["connector"]) == ("t0c0ffee", "win10", "lab")


async def test_the_compositor_process_logs_at_this_process_level(json_log: io.StringIO) -> None:
    """At DEBUG here, the child's DEBUG records come back too (asyncio's, at its start)."""
    from compositor.isolated import WorkerCrashed, _in_child

    with pytest.raises(WorkerCrashed):
        await _in_child({"op": "build_image", "spec": {}}, None)
    child = [r for r in json_lines(json_log.getvalue()) if r["message"].startswith("compositor process ")]
    assert any(r["level"] == "DEBUG" and r["logger"] == "asyncio" for r in child), child


async def test_the_planner_process_logs_as_this_one(catalog: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """serve plans a /publish in a child process sharing its stderr: JSON there too, masked."""
    import functools

    from bot.runner.planner import Planner

    root = logging.getLogger()
    level = root.level
    handler = log_setup.configure(logging.INFO, "json")  # sys.stderr, as the CLI does
    planner = Planner(catalog)
    try:
        say = functools.partial(logging.getLogger("tests.planner").warning, "asked with Bearer %s",
                                "Pl4nn3rT0k3n")
        await asyncio.get_running_loop().run_in_executor(planner._executor(), say)
    finally:
        await planner.close()
        root.removeHandler(handler)
        root.setLevel(level)
    err = capfd.readouterr().err
    assert "Pl4nn3rT0k3n" not in err
    [said] = [r for r in json_lines(err) if r["logger"] == "tests.planner"]
    assert said["message"] == f"asked with Bearer {log_setup.MASK}" and said["level"] == "WARNING"


def test_a_crash_is_one_masked_json_record(tmp_path: Path) -> None:
    """An uncaught exception (in the main thread or another) is logged, not printed as it is."""
    script = """if True:
        import logging, threading
        from bot.cli import log_setup
        log_setup.configure(logging.WARNING, "json")
        def fail(): raise ValueError("GET /o?upload_id=Cr4shS3ss1on")
        copier = threading.Thread(target=fail, name="copier")
        copier.start()
        copier.join()
        raise RuntimeError("Bearer Cr4shT0k3n")
    """
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Cr4sh" not in proc.stderr
    thread, main = json_lines(proc.stderr)
    assert thread["message"] == "uncaught exception in thread copier" and thread["level"] == "CRITICAL"
    assert f"ValueError: GET /o?upload_id={log_setup.MASK}" in thread["exc"]
    assert main["message"] == "uncaught exception"
    assert f"RuntimeError: Bearer {log_setup.MASK}" in main["exc"]
