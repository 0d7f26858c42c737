"""Queue throughput and wake-up latency of the task store: SQLite vs PostgreSQL, 1/2/4/8 workers.

A worker is a separate Python process (``bench/queue_bench.py --worker``) running one ``JobRunner``, the
class ``layerbot worker`` runs, with ``--slots`` tasks at a time (default 1). Its tasks are on a
no-op connector (bench/noop_adapter.py) and its compose stage is replaced by a stand-in that
records the stage and hands over a prebuilt 4 KiB artifact: everything else is the real runner
(claim, lease renewals, fenced updates and events, upload step, done, release). So the figures
are the queue's cost per task, not a platform's or the compositor's.

For each backend and worker count, on a fresh database:

1. **throughput**: ``--tasks`` tasks are queued first, then the workers start and drain them;
   tasks/s = tasks / (last finished - first started). (Enqueuing while the workers run would
   measure the one enqueuing process instead once the workers are faster than it.)
2. **enqueue-to-start** (a task's created_at to its first stage event): ``--latency-tasks`` tasks
   enqueued one at a time, each after the previous one finished, so on idle workers (PostgreSQL
   wakes them by NOTIFY; SQLite polls every 0.5 s).

PostgreSQL runs in a throw-away cluster (tests/store/pg_cluster.py: initdb in a temp dir, a random
loopback port, removed afterwards). All processes share this machine's cores: on a small machine
more workers mostly contend for CPU.

Example: .venv/bin/python bench/queue_bench.py --tasks 1000 --workers 1,2,4,8
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where this file would shadow
# the standard library's ``queue`` (which concurrent.futures imports).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adapters  # noqa: E402
from bot.catalog import load_catalog  # noqa: E402
from bot.runner.planning import enqueue, plan  # noqa: E402
from bot.store import states  # noqa: E402
from bot.store.backends import open_store  # noqa: E402
from bot.store.interface import Store  # noqa: E402
from bot.store.states import EventKind  # noqa: E402

adapters.register("noop", "bench.noop_adapter")

ARTIFACT_BYTES = 4096


def write_catalog(root: Path, slots: int) -> Path:
    (root / "layers" / "os").mkdir(parents=True)
    (root / "layers" / "os" / "hello").write_text("hello\n")
    (root / "layerbot.yml").write_text(textwrap.dedent(f"""\
        layers:
          os: {{kind: os, source: layers/os}}
        connectors:
          nothing: {{type: noop}}
        templates:
          bench: {{os_layer: os, connector: nothing, disk: {{size_gib: 1}}}}
        runner: {{max_parallel: {slots}, lease_seconds: 30, cache_dir: cache, work_dir: work}}
        """))
    (root / "artifact.raw").write_bytes(b"\0" * ARTIFACT_BYTES)
    return root / "layerbot.yml"


# ---------------------------------------------------------------- the worker process

def run_worker(db: str, config: Path) -> None:
    """One worker: a JobRunner whose compose stage is a stand-in (see the module docstring)."""
    from bot.runner import job_runner
    from bot.runner.task_steps import Job, UploadStep
    from compositor.spec import BuiltImage

    artifact = config.parent / "artifact.raw"

    class PrebuiltCompose:
        name = "compose"

        async def run(self, job: Job) -> None:
            await job.update(status=states.COMPOSITING, stage="compositing", progress=0.0,
                             event=(EventKind.STAGE, "compositing (bench stand-in)"))
            job.built = BuiltImage(path=artifact, format="raw", virtual_size=ARTIFACT_BYTES,
                                   file_size=ARTIFACT_BYTES, cache_key="bench", cache_hit=True)

        async def cleanup(self, job: Job, outcome: object) -> None:
            pass

    job_runner.steps_for = lambda job: [PrebuiltCompose(), UploadStep()]  # type: ignore[assignment,misc]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = job_runner.JobRunner(open_store(db), load_catalog(config))
        running = asyncio.create_task(runner.run(stop=stop))
        await runner.listening.wait()
        print("ready", flush=True)
        await running

    asyncio.run(main())


# ---------------------------------------------------------------- the measuring process

@dataclass
class Result:
    backend: str
    workers: int
    tasks_per_s: float
    idle_p50: float
    idle_p99: float


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def started_at(store: Store, task_id: str) -> float:
    return next(e.at for e in store.events(task_id) if e.kind == EventKind.STAGE)


def wait_finished(store: Store, count: int, workers: list[subprocess.Popen[str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = store.rows("SELECT count(*) AS n FROM tasks WHERE finished_at IS NOT NULL")[0]
        if int(row["n"]) >= count:
            return
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker exited: " + "".join(w.stdout.read() for w in workers
                                                             if w.poll() is not None and w.stdout))
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {row['n']} of {count} tasks finished in {timeout:.0f} s")
        time.sleep(0.01)


@contextmanager
def workers_running(db: str, config: Path, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--db", db, "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent)
             for _ in range(count)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"worker {proc.pid} did not start: {line}{proc.stdout.read()}")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(backend: str, db: str, config: Path, workers: int, tasks: int, latency_tasks: int) -> Result:
    store = open_store(db)
    catalog = load_catalog(config)
    publish_plan = plan(catalog, "bench", check_cache=False)
    try:
        ids = [enqueue(store, publish_plan, requested_by="bench")[0].id for _ in range(tasks)]
        with workers_running(db, config, workers) as procs:
            wait_finished(store, tasks, procs, timeout=60 + tasks)
            done = [store.get(i) for i in ids]
            if any(t.status != states.DONE for t in done):
                raise RuntimeError(f"not all done: {sorted({t.status for t in done})}")
            first = min(started_at(store, t.id) for t in done)
            last = max(t.finished_at or 0.0 for t in done)
            idle: list[float] = []
            for n in range(latency_tasks):
                task = enqueue(store, publish_plan, requested_by="bench")[0]
                wait_finished(store, tasks + n + 1, procs, timeout=60)
                idle.append(started_at(store, task.id) - task.created_at)
        return Result(backend, workers, tasks / (last - first), percentile(idle, 50), percentile(idle, 99))
    finally:
        store.close()


@contextmanager
def postgres_databases() -> Iterator[Iterator[str]]:
    """A throw-away cluster; yields a source of new empty databases' URLs."""
    import psycopg

    from tests.store.pg_cluster import pg_cluster

    with pg_cluster() as cluster:
        os.environ["PGPASSWORD"] = cluster.password  # the workers inherit it; never in the URL

        def fresh() -> Iterator[str]:
            while True:
                name = "bench_" + secrets.token_hex(4)
                with psycopg.connect(cluster.url(), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {name}")
                yield cluster.url(name)

        yield fresh()


def print_curve(results: list[Result]) -> None:
    print(f"{'backend':<10} {'workers':>7} {'tasks/s':>8} {'x 1 worker':>10} "
          f"{'start p50':>9} {'start p99':>9}")
    for r in results:
        one = next(o for o in results if o.backend == r.backend and o.workers == min(
            x.workers for x in results if x.backend == r.backend))
        ratio = r.tasks_per_s / one.tasks_per_s
        print(f"{r.backend:<10} {r.workers:>7} {r.tasks_per_s:>8.1f} {ratio:>10.2f} "
              f"{r.idle_p50 * 1000:>7.0f}ms {r.idle_p99 * 1000:>7.0f}ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per throughput run (default 1000)")
    parser.add_argument("--latency-tasks", type=int, default=30,
                        help="tasks enqueued one at a time on idle workers (default 30)")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated")
    parser.add_argument("--slots", type=int, default=1, help="tasks at a time per worker (default 1)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.db, args.config)
        return 0
    counts = [int(c) for c in args.workers.split(",")]
    backends = args.backends.split(",")
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or args.tasks < 1 or args.latency_tasks < 1 or min(counts) < 1:
        parser.error(f"--backends sqlite,postgresql; --tasks, --latency-tasks, --workers >= 1 "
                     f"(got backends {args.backends!r}, tasks {args.tasks}, workers {args.workers!r})")
    print(f"{args.tasks} tasks, {args.latency_tasks} idle wake-ups, {args.slots} slot(s) per worker, "
          f"{os.cpu_count()} CPUs", flush=True)
    base = Path(tempfile.mkdtemp(prefix="layerbot-bench-queue-"))
    results: list[Result] = []
    try:
        for backend in backends:
            with postgres_databases() if backend == "postgresql" else _no_postgres() as databases:
                for count in counts:
                    root = base / f"{backend}-{count}"
                    root.mkdir()
                    config = write_catalog(root, args.slots)
                    db = str(root / "tasks.db") if databases is None else next(databases)
                    results.append(measure(backend, db, config, count, args.tasks, args.latency_tasks))
                    done = results[-1]
                    print(f"  {backend}, {count} worker(s): {done.tasks_per_s:.1f} tasks/s",
                          file=sys.stderr, flush=True)
        print()
        print_curve(results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


@contextmanager
def _no_postgres() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
