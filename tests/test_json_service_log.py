"""``--log-format json``: every line a service writes, on stdout and stderr alike, is JSON
(journald keeps both in one stream that ``journalctl -o cat | jq .`` reads)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.catalog import Catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore

LAYERBOT = str(Path(sys.executable).parent / "layerbot")


def json_lines(text: str) -> list[dict[str, object]]:
    """Each line parsed; fails naming the first line that is not a JSON object."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_worker_writes_only_json_lines(catalog: Catalog, catalog_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        worker = subprocess.Popen(
            [LAYERBOT, "--config", str(catalog_dir / "layerbot.yml"), "--db", str(db),
             "--log-format", "json", "worker"], stdout=stdout, stderr=stderr, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while "working tasks from" not in err.read_text():
            assert worker.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.05)
        task, _ = enqueue(store, plan(catalog, "win10-office"), requested_by="alice")
        deadline = time.monotonic() + 120
        while not store.get(task.id).finished:
            assert time.monotonic() < deadline, store.get(task.id).status
            time.sleep(0.1)
        assert store.get(task.id).status == states.DONE, store.get(task.id).error
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    json_lines(out.read_text())
    messages = [str(r["message"]) for r in json_lines(err.read_text())]
    assert any("working tasks from" in m for m in messages), messages
    assert any(m.startswith("stopped;") for m in messages), messages
    assert any(r.get("task_id") == task.id for r in json_lines(err.read_text()))
