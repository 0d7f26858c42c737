"""The chaos harness's end checks count what went wrong: a task not Done is lost, an object at
the peer no Done task records is an orphan, a build dir left in a machine's work dir is a temp
file (no workers here: the store and the peer are set up by hand)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from bot.catalog import Catalog
from bot.runner.planning import enqueue, plan
from bot.store.model import Task
from bot.store.task_store import TaskStore
from compositor.sweep import BUILD_PREFIX
from tests.faults.chaos import _figures


class StrayPeer:
    platform, stages, command = "stray", ("compositing",), ("layerbot",)

    def connector(self) -> dict[str, str]:
        return {}

    def objects(self) -> set[str]:
        return {"vm left-behind"}

    def recorded(self, task: Task) -> set[str]:
        return set()

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        pass


def test_lost_tasks_orphans_and_temp_files_are_counted(catalog: Catalog, store: TaskStore,
                                                       tmp_path: Path) -> None:
    ids = [enqueue(store, plan(catalog, "win10-office", check_cache=False), requested_by="chaos")[0].id
           for _ in range(2)]
    machine = tmp_path / "m1"
    (machine / "work" / f"{BUILD_PREFIX}x").mkdir(parents=True)
    run = _figures(StrayPeer(), store, ids, [machine], backend="sqlite", seed=1, kills=3,
                   by_stage=Counter(compositing=3), finished_while_killing=0, seconds=1.0)
    assert run.lost == sorted(f"{i} queued" for i in ids)
    assert run.orphans == ["vm left-behind"]
    assert run.temp_files == [str(machine / "work" / f"{BUILD_PREFIX}x")]
    assert (run.duplicated, run.missing, run.kills_by_stage) == ([], [], {"compositing": 3})
    assert not run.clean()
