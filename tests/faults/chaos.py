"""Chaos per platform: three `layerbot worker` processes ("machines": own catalogs, cache and
work dirs) on one database publish to a platform's local peer while a random worker is
SIGKILLed and restarted at random (seeded) moments. Afterwards every task is finished and Done
once, every object at the peer is a task's recorded result (nothing orphaned) and no machine
left a temp file.

A platform plugs in through a :class:`Peer`: its connector settings, what is at the peer, what
a task recorded as its result, and the guests' side of a watch (powering them off). The
guests are tended only while the share of the kills left is no larger than the share of the
tasks unfinished (less one), so the kills still find work to land on. CHAOS_DEBUG=1 prints
each kill (when, what the worker was doing, the tasks' states)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import pytest

from bot.catalog import load_catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.model import StoreUnavailable, Task
from bot.store.states import EventKind
from compositor import scratch
from tests.faults.figures import ChaosRun, record
from tests.store.workers import WorkerProcess, leftover_temp_files, machine, start_worker, stop_workers

WORKERS = 3
#: a killed worker's tasks are taken over after this; attempts are not what is tested
LEASE_SECONDS = 2
MAX_ATTEMPTS = 100
#: the kills' pauses (seconds): short enough that each platform × backend run takes seconds
PAUSE = (0.1, 0.5)
#: how long a kill waits for a worker holding a task in the stage it aims at (the first kill
#: aimed at a stage waits longer: each stage gets one), then for one holding any task, before
#: it takes any worker
STAGE_WAIT = 1.5
FIRST_STAGE_WAIT = 20.0
HOLDER_WAIT = 10.0
#: how often the store is read for who holds what (an upload to a local peer takes ~0.1 s)
POLL = 0.02
#: at most this share of a run's kills may find no worker holding a task
MAX_IDLE_SHARE = 0.2


class Peer(Protocol):
    """A platform's local peer (or double), started by the test on 127.0.0.1."""

    #: the connector type, as in the registry
    platform: str
    #: the task states the kills aim at in turn (compositing, uploading, action_required: the watch)
    stages: tuple[str, ...]
    #: how a worker is started (before its ``--config``): ``layerbot``, or with short polls
    command: tuple[str, ...]

    def connector(self) -> dict[str, Any]:
        """The connector's settings in layerbot.yml (``type`` included)."""

    def objects(self) -> set[str]:
        """Everything at the peer now that a publish may have left (names of the peer's choosing)."""

    def recorded(self, task: Task) -> set[str]:
        """The objects at the peer ``task`` records as its published result."""

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """A guest's side of the watch: power on or off some of the guests ``tasks`` wait for (at
        random)."""


def _tasks(store: Store, ids: Iterable[str]) -> dict[str, Task] | None:
    try:
        return {i: store.get(i) for i in ids}
    except StoreUnavailable:
        return None


def _holding(workers: list[WorkerProcess], store: Store) -> dict[int, str]:
    """Worker index -> what the task it holds is doing (compositing, uploading, action_required)."""
    try:
        held = [t for t in store.list_tasks(limit=1000) if t.lease_owner is not None and not t.finished]
    except StoreUnavailable:
        return {}
    return {n: t.status for n, w in enumerate(workers) for t in held if f":{w.pid}:" in (t.lease_owner or "")}


def _all_finished(store: Store) -> bool:
    try:
        return all(t.finished for t in store.list_tasks(limit=1000))
    except StoreUnavailable:
        return False


def _pick_victim(workers: list[WorkerProcess], store: Store, rng: random.Random,
                 stage: str, patience: float) -> tuple[int, str]:
    """A worker holding a task in ``stage`` (waiting up to ``patience`` for one); else one
    holding a task in any stage (waiting up to HOLDER_WAIT); else, when no worker has held a
    task for that long (or every task is finished), any worker (``idle``). A worker still
    starting holds nothing, so kills land on work, not on start-ups."""
    started = time.monotonic()
    while True:
        holding = _holding(workers, store)
        waited = time.monotonic() - started
        in_stage = sorted(n for n, doing in holding.items() if doing == stage)
        if in_stage:
            return rng.choice(in_stage), stage
        if holding and waited > patience:
            victim = rng.choice(sorted(holding))
            return victim, holding[victim]
        if waited > HOLDER_WAIT or (not holding and _all_finished(store)):
            victim = rng.randrange(len(workers))
            return victim, "idle"
        time.sleep(POLL)


def run_chaos(peer: Peer, db: str, backend: str, root: Path, layers: Path, *, tasks: int = 15,
              kills: int = 30, seed: int = 18, settle_seconds: float = 120) -> ChaosRun:
    """The chaos run; returns its figures (the caller asserts and records them)."""
    rng = random.Random(seed)
    roots = [root / f"m{n}" for n in range(1, WORKERS + 1)]
    unused = root / "east-folder"  # machine()'s tagged connector: no task goes there
    unused.mkdir(parents=True)
    configs = [machine(r, layers, unused, lease_seconds=LEASE_SECONDS,
                       max_attempts=MAX_ATTEMPTS, connector=peer.connector()) for r in roots]
    store = open_store(db)
    started = time.monotonic()
    try:
        catalog = load_catalog(configs[0])
        ids = [enqueue(store, plan(catalog, "plain", check_cache=False), requested_by="chaos")[0].id
               for _ in range(tasks)]
        logs = [r / "worker.log" for r in roots]
        workers = [start_worker(c, db, log, peer.command) for c, log in zip(configs, logs, strict=True)]
        by_stage: Counter[str] = Counter()
        try:
            for kill in range(kills):
                time.sleep(rng.uniform(*PAUSE))
                now = list((_tasks(store, ids) or {}).values())
                # else the guests wait: the kills left need work (one task to spare: a started
                # guest may finish its task on its own, as qemu's does)
                if (kills - kill) * tasks <= kills * (sum(not t.finished for t in now) - 1):
                    peer.tend_guests(rng, now)
                aim = peer.stages[kill % len(peer.stages)]
                patience = STAGE_WAIT if by_stage[aim] else FIRST_STAGE_WAIT
                victim, doing = _pick_victim(workers, store, rng, aim, patience)
                by_stage[doing] += 1
                if os.environ.get("CHAOS_DEBUG"):
                    now = _tasks(store, ids) or {}
                    print(f"kill {kill} t={time.monotonic() - started:.1f} {doing} unfinished="
                          f"{sum(not t.finished for t in now.values())} "
                          f"{Counter(t.status for t in now.values())}", flush=True)
                workers[victim].send_signal(signal.SIGKILL)
                code = workers[victim].wait()
                assert code == -signal.SIGKILL, (
                    f"worker {workers[victim].pid} had exited by itself ({code}) before its kill: "
                    f"{workers[victim].log.read_text(errors='replace')[-2000:]}")
                workers[victim] = start_worker(configs[victim], db, logs[victim], peer.command)
            finished_while_killing = sum(t.finished for t in (_tasks(store, ids) or {}).values())
            deadline = time.monotonic() + settle_seconds
            while time.monotonic() < deadline:
                now = _tasks(store, ids)
                if now is not None and all(t.finished for t in now.values()):
                    break
                peer.tend_guests(rng, list(now.values()) if now is not None else [])
                assert all(w.poll() is None for w in workers), "a worker exited"
                time.sleep(0.2)
        finally:
            codes = stop_workers(workers)
        assert codes == [0] * WORKERS, [log.read_text()[-2000:] for log in logs]
        crashes = [f"{log}: {text[text.index('Traceback'):][:2000]}" for log in logs
                   if "Traceback" in (text := log.read_text(errors="replace"))]
        assert not crashes, crashes
        return _figures(peer, store, ids, roots, backend=backend, seed=seed, kills=kills,
                        by_stage=by_stage, finished_while_killing=finished_while_killing,
                        seconds=time.monotonic() - started)
    finally:
        store.close()


def _figures(peer: Peer, store: Store, ids: list[str], roots: list[Path], *, backend: str, seed: int,
             kills: int, by_stage: Counter[str], finished_while_killing: int,
             seconds: float) -> ChaosRun:
    final = {i: store.get(i) for i in ids}
    done_events = {i: sum(1 for e in store.events(i) if e.kind == EventKind.DONE) for i in ids}
    recorded: set[str] = set()
    for task in final.values():
        if task.status == states.DONE:
            recorded |= peer.recorded(task)
    at_peer = peer.objects()
    return ChaosRun(
        platform=peer.platform, backend=backend, seed=seed, kills=kills,
        kills_by_stage=dict(sorted(by_stage.items())), tasks=len(ids),
        finished_while_killing=finished_while_killing,
        lost=sorted(f"{i} {t.status}" for i, t in final.items() if t.status != states.DONE),
        duplicated=sorted(i for i, n in done_events.items() if n > 1),
        leased=sorted(i for i, t in final.items() if t.lease_owner is not None),
        orphans=sorted(at_peer - recorded), missing=sorted(recorded - at_peer),
        temp_files=[str(p) for r in roots for p in leftover_temp_files(r)] + _ram_leftovers(),
        seconds=round(seconds, 1), stages=list(peer.stages))


def _ram_leftovers() -> list[str]:
    """What the workers' builds left in the RAM scratch folder they share (tests/conftest.py's
    ram_scratch sets it for the test and they inherit it): nothing but its lock."""
    folder = os.environ.get(scratch.ENV_VAR, "off")
    root = scratch.ram_root(Path(folder)) if folder != "off" else None
    if root is None or not root.is_dir():
        return []
    return sorted(str(p) for p in root.iterdir() if p.name != ".lock")


BACKENDS = ("sqlite", "postgresql")
#: the database of each platform's 30-kill run in CI; its run on the other database and both
#: 50-kill runs are ``long`` (scripts/test.sh --long): twenty runs of some 40 s each would
#: double the suite, and what a database adds (claims, leases, fencing) is the same for every
#: platform, so CI takes each database on half the platforms
CI_BACKEND = {"local": "sqlite", "qemu": "postgresql", "vsphere": "sqlite", "azure": "postgresql",
              "azure-mcs": "sqlite", "gcp": "postgresql", "nutanix": "sqlite",
              "xenserver": "postgresql", "hyperv": "sqlite", "pvs": "postgresql"}


def runs(platform: str) -> list[Any]:
    """A platform's chaos runs, as pytest params of (backend, kills): on each database, 30
    kills and 50; CI runs 30 on ``CI_BACKEND[platform]``, the rest are ``long``."""
    return [pytest.param(backend, kills, id=f"{backend}-{kills}-kills",
                         marks=() if (kills, backend) == (30, CI_BACKEND[platform]) else pytest.mark.long)
            for backend in BACKENDS for kills in (30, 50)]


def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database the workers share: a SQLite file, or a new PostgreSQL database (tests/store's
    throw-away cluster)."""
    if backend == "sqlite":
        return str(tmp_path / "layerbot.db")
    return str(request.getfixturevalue("pg_url"))


def record_and_check(run: ChaosRun) -> None:
    record(run)
    print(f"chaos {run.platform}/{run.backend}: {run.kills} kills {run.kills_by_stage}, "
          f"{run.tasks} tasks ({run.finished_while_killing} finished while killing), {run.seconds} s")
    assert run.clean(), asdict(run)
    assert_kills_landed(run)


def assert_kills_landed(run: ChaosRun) -> None:
    """The kills hit work: each stage the run aimed at took at least one, and at most
    MAX_IDLE_SHARE of them found no worker holding a task."""
    missed = [s for s in run.stages if not run.kills_by_stage.get(s)]
    idle = run.kills_by_stage.get("idle", 0)
    assert not missed and idle <= MAX_IDLE_SHARE * run.kills, (
        f"the kills did not land where they were aimed: {run.kills_by_stage} (no kill at "
        f"{missed}; {idle} of {run.kills} with no task held)")
