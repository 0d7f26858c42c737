"""bench/reliability.py's chaos table: per platform and database, the kills survived and what
went wrong (lost, done twice, orphans, temp files); a run with any of them exits 1."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.faults.figures import ENV_VAR, ChaosRun, FaultRun, record

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ChaosRun(platform="local", backend="sqlite", seed=18, kills=30,
                 kills_by_stage={"compositing": 20, "idle": 7, "uploading": 3}, tasks=15,
                 finished_while_killing=2, lost=[], duplicated=[], leased=[], orphans=[], missing=[],
                 temp_files=[], seconds=30.0)


def bench(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench/reliability.py"), "--from", str(folder)],
                          capture_output=True, text=True, check=False)


def test_the_chaos_table_sums_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    record(CLEAN)
    record(replace(CLEAN, backend="postgresql", kills=50, kills_by_stage={"compositing": 50}))
    out = bench(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "| local | postgresql | 1 | 50 | compositing 50 | 15 | 0 | 0 | 0 | 0 | 30 |" in lines
    assert ("| local | sqlite | 1 | 30 | compositing 20, idle 7, uploading 3 | 15 | 0 | 0 | 0 | 0 | 30 |"
            in lines)
    assert ("| **total** |  | 2 | 80 | compositing 70, idle 7, uploading 3 | 30 | 0 | 0 | 0 | 0 | 60 |"
            in lines)


def test_an_orphan_or_a_lost_task_fails_the_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    record(replace(CLEAN, orphans=["plain/t0.img"], leased=["t1"], lost=["t1 compositing"]))
    out = bench(tmp_path)
    assert out.returncode == 1
    assert "| local | sqlite | 1 | 30 | compositing 20, idle 7, uploading 3 | 15 | 1 | 0 | 1 | 0 | 30 |" \
        in out.stdout.splitlines()
    assert "chaos: 2 tasks lost or done twice" in out.stderr


def test_the_summary_has_one_line_per_platform_with_faults_and_kills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    for phase, kinds, error in (("all", {"500": 2, "stall": 1}, "vCenter said no"),
                                ("import", {"429": 1}, None)):
        record(FaultRun(platform=f"vsphere ({phase})", seed=1,
                        outcome="succeeded" if error is None else "failed cleanly",
                        injected=kinds, retried=sum(kinds.values()) - 1, error=error or ""))
    record(replace(CLEAN, platform="vsphere"))
    record(replace(CLEAN, platform="vsphere", backend="postgresql", duplicated=["t3"]))
    record(replace(CLEAN, platform="local"))
    out = bench(tmp_path)
    assert out.returncode == 1  # the task done twice
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| platform | faults injected | retried | failed cleanly | orphans "
                               "| kills survived | tasks lost | done twice |")
    assert "| local | — | — | — | 0 | 30 | 0 | 0 |" in lines[:6]
    assert "| vsphere | 4 | 2 | 1 | 0 | 60 | 0 | 1 |" in lines[:6]
    assert "| **total** | 4 | 2 | 1 | 0 | 90 | 0 | 1 |" in lines[:6]
