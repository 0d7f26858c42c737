"""Chaos on the local target (a folder): 3 workers over 15 tasks, 30 SIGKILLs (50 in the long
variant), on SQLite and on PostgreSQL; the folder then holds each Done task's file and nothing
else."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.store import states
from bot.store.model import Task
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.store.workers import LAYERBOT

COVERS = ("local",)
pytestmark = pytest.mark.timeout(300)


class FolderPeer:
    platform = "local"
    stages = (states.COMPOSITING, states.UPLOADING)
    command = (LAYERBOT,)

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder

    def connector(self) -> dict[str, str]:
        return {"type": "local", "path": str(self.folder), "format": "raw"}

    def objects(self) -> set[str]:
        # partial copies and their temp names too: a killed copy must not stay behind
        return {p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()}

    def recorded(self, task: Task) -> set[str]:
        resource = (task.published or {}).get("resource") or {}
        return {Path(resource["path"]).relative_to(self.folder).as_posix()} if "path" in resource else set()

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """A folder has no guest: its tasks are Done once the file is in place."""


@pytest.mark.parametrize(("backend", "kills"), runs("local"))
def test_local_target_survives_kills(backend: str, kills: int, catalog_dir: Path, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    peer = FolderPeer(tmp_path / "published")
    run = run_chaos(peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    record_and_check(run)
