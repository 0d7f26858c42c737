"""Fault and chaos figures per platform: runs the fault tests (tests/faults/test_faults_*.py)
and the chaos tests (tests/faults/test_chaos_*.py) with LAYERBOT_RELIABILITY_OUT set, then prints
three tables:

- the summary, one line per platform: faults injected, retried, publishes failed cleanly,
  objects orphaned (must be 0), kills survived, tasks lost and done twice (both 0);
- the fault runs per platform: publishes run, faults injected (and by kind), how many of them the
  adapter retried, publishes that succeeded and that failed cleanly, objects left at the peer;
- the chaos runs per platform and database: kills survived (by what the killed worker was doing),
  tasks run, lost, done twice, objects orphaned at the peer, temp files left.

    .venv/bin/python bench/reliability.py            # run the tests, then the tables
    .venv/bin/python bench/reliability.py --from DIR  # the tables of an earlier run's *.jsonl
    .venv/bin/python bench/reliability.py -- --long   # with the long variants (50 kills)

Exits 1 when a test failed or any orphan, lost or duplicated task was counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.figures import CHAOS_FILE_NAME, ENV_VAR, FILE_NAME  # noqa: E402


@dataclass
class Row:
    platform: str
    runs: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    succeeded: int = 0
    failed_cleanly: int = 0
    orphans: int = 0


def read_runs(path: Path) -> list[dict[str, object]]:
    """The JSON lines of a run; a line that is not JSON names the file and line."""
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            runs.append(json.loads(line))
        except ValueError as exc:
            raise SystemExit(f"{path}:{number}: not a JSON line ({exc})") from None
    return runs


def table(runs: list[dict[str, object]]) -> list[Row]:
    rows: dict[str, Row] = {}
    for run in runs:
        row = rows.setdefault(str(run["platform"]), Row(str(run["platform"])))
        row.runs += 1
        row.injected.update({str(k): int(v) for k, v in dict(run["injected"]).items()})  # type: ignore[arg-type]
        row.retried += int(run["retried"])  # type: ignore[call-overload]
        if run["outcome"] == "succeeded":
            row.succeeded += 1
        else:
            row.failed_cleanly += 1
        row.orphans += len(run["orphans"])  # type: ignore[arg-type]
    return sorted(rows.values(), key=lambda r: r.platform)


def render(rows: list[Row]) -> str:
    head = ("| platform | publishes | faults injected | retried | succeeded | failed cleanly "
            "| orphans | faults by kind |")
    lines = [head, "|" + " --- |" * 8]
    for r in [*rows, total(rows)]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.injected.items()))
        lines.append(f"| {r.platform} | {r.runs} | {sum(r.injected.values())} | {r.retried} "
                     f"| {r.succeeded} | {r.failed_cleanly} | {r.orphans} | {kinds} |")
    return "\n".join(lines)


def total(rows: list[Row]) -> Row:
    out = Row("**total**")
    for r in rows:
        out.runs += r.runs
        out.injected.update(r.injected)
        out.retried += r.retried
        out.succeeded += r.succeeded
        out.failed_cleanly += r.failed_cleanly
        out.orphans += r.orphans
    return out


@dataclass
class ChaosRow:
    platform: str
    backend: str
    runs: int = 0
    kills: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    lost: int = 0
    duplicated: int = 0
    orphans: int = 0
    temp_files: int = 0
    seconds: float = 0.0

    def bad(self) -> int:
        return self.lost + self.duplicated + self.orphans + self.temp_files


def chaos_table(runs: list[dict[str, object]]) -> list[ChaosRow]:
    rows: dict[tuple[str, str], ChaosRow] = {}
    for run in runs:
        key = (str(run["platform"]), str(run["backend"]))
        row = rows.setdefault(key, ChaosRow(*key))
        row.runs += 1
        row.kills += int(run["kills"])  # type: ignore[call-overload]
        row.by_stage.update({str(k): int(v) for k, v in dict(run["kills_by_stage"]).items()})  # type: ignore[arg-type]
        row.tasks += int(run["tasks"])  # type: ignore[call-overload]
        # a task whose lease was never released is stuck: lost as well (once: "<id> <status>")
        lost = {str(t).split()[0] for t in run["lost"]} | set(map(str, run["leased"]))  # type: ignore[attr-defined]
        row.lost += len(lost)
        row.duplicated += len(run["duplicated"])  # type: ignore[arg-type]
        row.orphans += len(run["orphans"]) + len(run["missing"])  # type: ignore[arg-type]
        row.temp_files += len(run["temp_files"])  # type: ignore[arg-type]
        row.seconds += float(run["seconds"])  # type: ignore[arg-type]
    return sorted(rows.values(), key=lambda r: (r.platform, r.backend))


def chaos_total(rows: list[ChaosRow]) -> ChaosRow:
    out = ChaosRow("**total**", "")
    for r in rows:
        out.runs += r.runs
        out.kills += r.kills
        out.by_stage.update(r.by_stage)
        out.tasks += r.tasks
        out.lost += r.lost
        out.duplicated += r.duplicated
        out.orphans += r.orphans
        out.temp_files += r.temp_files
        out.seconds += r.seconds
    return out


def render_chaos(rows: list[ChaosRow]) -> str:
    head = ("| platform | database | runs | kills survived | kills by stage | tasks | lost | done twice "
            "| orphans | temp files | seconds |")
    lines = [head, "|" + " --- |" * 11]
    for r in [*rows, chaos_total(rows)]:
        stages = ", ".join(f"{k} {n}" for k, n in sorted(r.by_stage.items()))
        lines.append(f"| {r.platform} | {r.backend} | {r.runs} | {r.kills} | {stages} | {r.tasks} "
                     f"| {r.lost} | {r.duplicated} | {r.orphans} | {r.temp_files} | {r.seconds:.0f} |")
    return "\n".join(lines)


@dataclass
class SummaryRow:
    platform: str
    faulted: bool = False
    chaos: bool = False
    injected: int = 0
    retried: int = 0
    failed_cleanly: int = 0
    orphans: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0


def summary_table(rows: list[Row], chaos_rows: list[ChaosRow]) -> list[SummaryRow]:
    """One row per platform: a fault run's label's detail ("vsphere (import)") is dropped, the
    chaos runs of both databases are added up; orphans count both kinds of run."""
    out: dict[str, SummaryRow] = {}
    for r in rows:
        s = out.setdefault(r.platform.split(" (")[0], SummaryRow(r.platform.split(" (")[0]))
        s.faulted = True
        s.injected += sum(r.injected.values())
        s.retried += r.retried
        s.failed_cleanly += r.failed_cleanly
        s.orphans += r.orphans
    for c in chaos_rows:
        s = out.setdefault(c.platform, SummaryRow(c.platform))
        s.chaos = True
        s.kills += c.kills
        s.lost += c.lost
        s.duplicated += c.duplicated
        s.orphans += c.orphans
    return sorted(out.values(), key=lambda r: r.platform)


def render_summary(rows: list[SummaryRow]) -> str:
    head = ("| platform | faults injected | retried | failed cleanly | orphans | kills survived "
            "| tasks lost | done twice |")
    lines = [head, "|" + " --- |" * 8]
    total = SummaryRow("**total**", faulted=True, chaos=True)
    for r in rows:
        for name in ("injected", "retried", "failed_cleanly", "orphans", "kills", "lost", "duplicated"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    for r in [*rows, total]:
        faults = [r.injected, r.retried, r.failed_cleanly] if r.faulted else ["—"] * 3
        chaos = [r.kills, r.lost, r.duplicated] if r.chaos else ["—"] * 3
        cells = [r.platform, *faults, r.orphans, *chaos]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def run_tests(out: Path, extra: list[str]) -> int:
    tests = sorted(str(p.relative_to(ROOT)) for pattern in ("test_faults_*.py", "test_chaos_*.py")
                   for p in (ROOT / "tests/faults").glob(pattern))
    env = {**os.environ, ENV_VAR: str(out)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests, *extra], cwd=ROOT, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help=f"a folder holding {FILE_NAME} from an earlier run")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.source is not None:
        rc, folder = 0, args.source
    else:
        folder = Path(tempfile.mkdtemp(prefix="layerbot-reliability-"))
        rc = run_tests(folder, args.pytest_args)
    path, chaos_path = folder / FILE_NAME, folder / CHAOS_FILE_NAME
    if not path.is_file() and not chaos_path.is_file():
        print(f"no fault or chaos run was recorded ({path} and {chaos_path} are missing)", file=sys.stderr)
        return 1
    rows = table(read_runs(path)) if path.is_file() else []
    chaos_rows = chaos_table(read_runs(chaos_path)) if chaos_path.is_file() else []
    print(render_summary(summary_table(rows, chaos_rows)))
    orphans = bad = 0
    if rows:
        print()
        print(render(rows))
        orphans = total(rows).orphans
        if orphans:
            print(f"{orphans} objects were left at the peers", file=sys.stderr)
    if chaos_rows:
        print()
        print(render_chaos(chaos_rows))
        bad = chaos_total(chaos_rows).bad()
        if bad:
            print(f"chaos: {bad} tasks lost or done twice, objects orphaned or temp files left",
                  file=sys.stderr)
    return 1 if rc or orphans or bad else 0


if __name__ == "__main__":
    sys.exit(main())
