"""Fault figures per platform: runs the fault tests (tests/faults/test_faults_*.py) with
LAYERBOT_RELIABILITY_OUT set, then prints, per platform, the publishes run, the faults injected
(and by kind), how many of them the adapter retried, the publishes that succeeded and those that
failed cleanly, and the objects left at the peer (must be 0).

    .venv/bin/python bench/reliability.py            # run the fault tests, then the table
    .venv/bin/python bench/reliability.py --from DIR  # the table of an earlier run's faults.jsonl

Exits 1 when a fault test failed or any orphan was left.
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

from tests.faults.figures import ENV_VAR, FILE_NAME  # noqa: E402


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


def run_tests(out: Path, extra: list[str]) -> int:
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests/faults").glob("test_faults_*.py"))
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
    path = folder / FILE_NAME
    if not path.is_file():
        print(f"no fault run was recorded ({path} is missing)", file=sys.stderr)
        return 1
    rows = table(read_runs(path))
    print(render(rows))
    orphans = total(rows).orphans
    if orphans:
        print(f"{orphans} objects were left at the peers", file=sys.stderr)
    return 1 if rc or orphans else 0


if __name__ == "__main__":
    sys.exit(main())
