"""A runner killed (SIGKILL) while compositing: its compositor child stops too, nothing
half-built is left (the child cleans up, or the next runner sweeps), and the next runner
completes the task once."""

from __future__ import annotations

import os
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from bot.catalog import load_catalog
from bot.store import states
from bot.store.task_store import TaskStore
from tests.fake_adapter import with_fake
from tests.test_runner import _worker, kinds, queue, resume_to_done

BIG = 160 << 20


def _big_layer(path: Path) -> None:
    """An OS layer big enough (random data) that compositing takes a while."""
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            chunk = path.parent / f"blob{i}"
            chunk.write_bytes(os.urandom(BIG // 4))
            tar.add(chunk, arcname=f"opt/blob{i}")
            chunk.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """Child pids, from every process's stat (/proc/PID/task/*/children needs a kernel
    option that not every kernel has)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_killed_while_compositing(write_catalog: Callable[[str], Path], tmp_path: Path,
                                  catalog_dir: Path) -> None:
    _big_layer(catalog_dir / "layers" / "os.tar")
    config = write_catalog(with_fake("upload_seconds: 0.2"))
    cat = load_catalog(config)
    db = tmp_path / "shared.db"
    store = TaskStore(db)
    task_id = queue(store, cat)
    log = tmp_path / "workers.log"
    first = _worker(config, db, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the first runner never started compositing"
            assert first.poll() is None, log.read_text()
            if store.get(task_id).status == states.COMPOSITING and _children(first.pid):
                break
            time.sleep(0.02)
        time.sleep(0.3)  # inside the build: extracting or writing the disk
        children = _children(first.pid)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children):  # the compositor child notices and exits
        assert time.monotonic() < deadline, "the compositor child outlived its runner"
        time.sleep(0.05)
    work, cache = cat.runner.work_dir, cat.runner.cache_dir
    assert not (cache / "images").exists() or not any((cache / "images").iterdir())

    resume_to_done(config, db, log, store, task_id, catalog_dir)
    events = kinds(store, task_id)
    assert events.count("done") == 1 and events.count("composited") == 1
    assert "resumed" in events
    assert list(work.glob("layerbot-build-*")) == []  # swept at the second runner's start
    assert list((cache / "tmp").glob("*")) == []
