"""Helpers of the multi-process store tests: "machines" (their own catalog, cache and work
dirs, one shared target folder), `layerbot worker` processes, and the end-state checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.store import states
from bot.store.interface import Store
from bot.store.model import StoreUnavailable
from bot.store.states import EventKind
from compositor.sweep import BUILD_PREFIX, DIGEST_TEMP_PREFIX

LAYERBOT = str(Path(sys.executable).parent / "layerbot")


def machine(root: Path, layers: Path, published: Path, *, lease_seconds: float = 5,
            max_attempts: int = 8, connector: Mapping[str, Any] | None = None) -> Path:
    """A machine's layerbot.yml (template ``plain`` on the local target, or on ``connector``'s
    settings when given; ``eastern`` on a local connector tagged ``dc-east``); returns its path."""
    root.mkdir()
    folder = json.dumps(dict(connector) if connector is not None
                        else {"type": "local", "path": str(published), "format": "raw"})
    (root / "layerbot.yml").write_text(textwrap.dedent(f"""\
        layers:
          base-os: {{kind: os, source: {layers / 'os.tar'}}}
          office: {{kind: app, source: {layers / 'office'}}}
        connectors:
          folder: {folder}
          east-folder: {{type: local, path: {published}, format: raw, runner_tags: [dc-east]}}
        templates:
          plain: {{os_layer: base-os, app_layers: [office], connector: folder, disk: {{size_gib: 1}}}}
          eastern: {{os_layer: base-os, app_layers: [office], connector: east-folder, disk: {{size_gib: 1}}}}
        runner: {{max_parallel: 2, lease_seconds: {lease_seconds}, max_attempts: {max_attempts},
                  cache_dir: cache, work_dir: work}}
        """))
    return root / "layerbot.yml"


class WorkerProcess(subprocess.Popen[bytes]):
    """A `layerbot worker` process appending its output to ``log``."""

    def __init__(self, config: Path, db: str, log: Path, command: Sequence[str] = (LAYERBOT,)) -> None:
        self.log = log
        with log.open("ab") as out:
            super().__init__([*command, "--config", str(config), "--db", db, "worker"],
                             stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())

    def wait_ready(self, seconds: float = 60) -> str:
        """Until it announced itself: its SIGINT/SIGTERM handlers are in place by then (a
        signal during the interpreter's start-up is a crash no program can prevent). Returns
        its runner id (the tasks' lease_owner)."""
        marker = f":{self.pid}:"
        deadline = time.monotonic() + seconds
        while True:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("runner ") and marker in line and "working tasks from" in line:
                    return line.split()[1].rstrip(":")
            assert self.poll() is None, f"worker {self.pid} exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"worker {self.pid} not ready after {seconds} s"
            time.sleep(0.05)


def start_worker(config: Path, db: str, log: Path, command: Sequence[str] = (LAYERBOT,)) -> WorkerProcess:
    """A worker: ``layerbot`` unless ``command`` runs it another way (e.g. with short polls)."""
    return WorkerProcess(config, db, log, command)


def stop_workers(workers: Sequence[WorkerProcess], sig: signal.Signals = signal.SIGINT) -> list[int]:
    """Stop each one still running cleanly (SIGINT or SIGTERM, once it is ready for it); their
    exit codes."""
    signalled: set[int] = set()
    try:
        for w in workers:
            if w.poll() is None:
                w.wait_ready()
                w.send_signal(sig)
                signalled.add(w.pid)
    finally:  # a worker that never got ready (or died) must not leave the others running
        for w in workers:
            if w.pid not in signalled and w.poll() is None:
                w.kill()
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    return [w.returncode for w in workers]


def wait_finished(store: Store, ids: list[str], seconds: float,
                  workers: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Poll until every task is finished; a lost connection is retried (the store reopens it)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if all(store.get(i).finished for i in ids):
                return
        except StoreUnavailable:
            pass
        assert all(w.poll() is None for w in workers), "a worker exited"
        assert time.monotonic() < deadline, [store.get(i).status for i in ids]
        time.sleep(0.2)


def done_once(store: Store, ids: list[str], published: Path) -> dict[str, int]:
    """Assert: every task Done with its lease released, one done event and one artifact each,
    nothing else in the target folder. Returns the counts."""
    tasks = {i: store.get(i) for i in ids}
    lost = [i for i, t in tasks.items() if t.status != states.DONE]
    leased = [i for i, t in tasks.items() if t.lease_owner is not None]
    done_events = {i: sum(1 for e in store.events(i) if e.kind == EventKind.DONE) for i in ids}
    twice = [i for i, n in done_events.items() if n > 1]
    artifacts = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    counts = {"tasks": len(ids), "lost": len(lost), "done_twice": len(twice), "leased": len(leased),
              "artifacts": len(artifacts)}
    assert (lost, twice, leased) == ([], [], []), counts
    assert artifacts == sorted(f"{tasks[i].template}/{i}.img" for i in ids)
    return counts


def leftover_temp_files(machine_dir: Path) -> list[Path]:
    """Temp files and build dirs of a machine's cache and work dirs."""
    cache, work = machine_dir / "cache", machine_dir / "work"
    found = [*(cache / "tmp").glob("*"), *(cache / "digests").glob(f"{DIGEST_TEMP_PREFIX}*"),
             *work.glob(f"{BUILD_PREFIX}*")]
    return sorted(found)
