"""Chaos on Citrix Provisioning (the vhdx copied to the real Samba peer as the store's folder, the
snap-in's cmdlets run by the farm double, which this test serves to the workers over loopback so
that the three share one farm): 3 workers over 15 tasks, 30 SIGKILLs aimed in turn at compose and
at the copy and import (a vDisk is Done once registered: there is no watch), on SQLite and
PostgreSQL. The farm then holds each Done task's vDisk and the store its .vhdx and .pvp, and
nothing else."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import states
from bot.store.model import Task
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.faults.test_chaos_hyperv import share_files
from tests.pvs.conftest import pvs_config
from tests.pvs.pvs_double import PvsDouble
from tests.windows_remote.samba_peer import SambaPeer, samba, smb_env
from tests.windows_remote.served_double import served

__all__ = ["samba", "smb_env"]
COVERS = ("pvs",)
pytestmark = pytest.mark.timeout(300)


class PvsPeer:
    platform = "pvs"
    stages = (states.COMPOSITING, states.UPLOADING)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "pvs")

    def __init__(self, samba: SambaPeer, farm: PvsDouble) -> None:
        self.samba, self.farm = samba, farm

    def connector(self) -> dict[str, Any]:
        return pvs_config(self.samba).model_dump(mode="json", exclude_none=True)

    def objects(self) -> set[str]:
        return {*(f"vdisk {store}/{site}/{name}" for store, site, name in self.farm.locators()),
                *share_files(self.samba.share_dir)}

    def recorded(self, task: Task) -> set[str]:
        """The registered vDisk, its file and the properties Import-PvsDisk wrote next to it."""
        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "pvs.published":
            return set()
        name = resource["name"]
        return {f"vdisk {resource['store']}/{resource['site']}/{name}", f"file {name}.vhdx",
                f"file {name}.pvp"}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """A vDisk has no guest: its tasks are Done once it is registered."""


@pytest.fixture
def pvs_peer(smb_env: SambaPeer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PvsPeer]:
    farm = PvsDouble(store_dir=smb_env.share_dir)
    with served(farm, monkeypatch):
        yield PvsPeer(smb_env, farm)


@pytest.mark.parametrize(("backend", "kills"), runs("pvs"))
def test_pvs_survives_kills(backend: str, kills: int, pvs_peer: PvsPeer, catalog_dir: Path,
                            tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = run_chaos(pvs_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    assert pvs_peer.farm.logins, "no worker reached the served farm"
    record_and_check(run)
