"""What a fault run and a chaos run write for bench/reliability.py: one JSON line per run, in
``$LAYERBOT_RELIABILITY_OUT/faults.jsonl`` (``chaos.jsonl``) when that variable is set (nothing
otherwise)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

ENV_VAR = "LAYERBOT_RELIABILITY_OUT"
FILE_NAME = "faults.jsonl"
CHAOS_FILE_NAME = "chaos.jsonl"


@dataclass
class FaultRun:
    platform: str
    seed: int
    #: "succeeded" or "failed cleanly"
    outcome: str
    injected: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    forwarded: int = 0
    #: what was left at the peer after the run and the runner's cleanup (must be empty)
    orphans: list[str] = field(default_factory=list)
    error: str = ""


class Injector(Protocol):
    """What injects faults (tests.faults.proxy.FaultProxy, the TCP relay, the WinRM faults)."""

    @property
    def retried(self) -> int: ...

    @property
    def forwarded(self) -> int: ...

    def counts(self) -> dict[str, int]: ...


def counts_by_kind(injectors: Sequence[Injector]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for injector in injectors:
        total.update(injector.counts())
    return dict(total)


def fault_run(platform: str, seed: int, proxies: Sequence[Injector], *, error: str | None,
              orphans: list[str]) -> FaultRun:
    return FaultRun(platform=platform, seed=seed,
                    outcome="succeeded" if error is None else "failed cleanly",
                    injected=counts_by_kind(proxies), retried=sum(p.retried for p in proxies),
                    forwarded=sum(p.forwarded for p in proxies), orphans=orphans,
                    error=error or "")


@dataclass
class ChaosRun:
    """A chaos run (tests/faults/chaos.py): lost, duplicated, leased, orphans, missing and
    temp_files must all be empty."""

    platform: str
    #: "sqlite" or "postgresql"
    backend: str
    seed: int
    kills: int
    #: what the killed worker's task was doing: compositing, uploading, action_required (the
    #: watch), or idle
    kills_by_stage: dict[str, int]
    tasks: int
    finished_while_killing: int
    #: tasks not Done at the end ("<id> <status>")
    lost: list[str]
    #: tasks with more than one done event
    duplicated: list[str]
    #: tasks whose lease was never released
    leased: list[str]
    #: objects at the peer no Done task records as its result
    orphans: list[str]
    #: results a Done task records that are not at the peer
    missing: list[str]
    temp_files: list[str]
    seconds: float
    #: the task states the kills aimed at in turn (the peer's stages)
    stages: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.leased or self.orphans or self.missing
                    or self.temp_files)


def record(run: FaultRun | ChaosRun) -> None:
    out = os.environ.get(ENV_VAR)
    if not out:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    name = CHAOS_FILE_NAME if isinstance(run, ChaosRun) else FILE_NAME
    with open(folder / name, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(run), sort_keys=True) + "\n")
