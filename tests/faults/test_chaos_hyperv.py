"""Chaos on Hyper-V (the disk copied to the real Samba peer, the host's cmdlets run by the
PowerShell double, which this test serves to the workers over loopback so that the three share
one host): 3 workers over 15 tasks, 30 SIGKILLs aimed in turn at compose, the copy and VM, and
the watch (the test starts each waiting VM, then turns it off, at random moments), on SQLite and
PostgreSQL. The host then holds each Done task's VM and the share its disk, and nothing else."""

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
from tests.hyperv.conftest import LOCAL_PATH, hyperv_config
from tests.hyperv.hyperv_double import HyperVDouble
from tests.windows_remote.samba_peer import SambaPeer, samba, smb_env
from tests.windows_remote.served_double import served

__all__ = ["samba", "smb_env"]
COVERS = ("hyperv",)
pytestmark = pytest.mark.timeout(300)


def share_files(share_dir: Path) -> set[str]:
    """Every file in the share (partial copies too), as ``file <path in the share>``."""
    return {f"file {p.relative_to(share_dir).as_posix()}" for p in share_dir.rglob("*") if p.is_file()}


class HyperVPeer:
    platform = "hyperv"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "hyperv")

    def __init__(self, samba: SambaPeer, host: HyperVDouble) -> None:
        self.samba, self.host = samba, host

    def connector(self) -> dict[str, Any]:
        return hyperv_config(self.samba).model_dump(mode="json", exclude_none=True)

    def objects(self) -> set[str]:
        return {*(f"vm {vm['VMId']}" for vm in self.host.snapshot()), *share_files(self.samba.share_dir)}

    def recorded(self, task: Task) -> set[str]:
        """The published VM and the disk it boots from."""
        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "hyperv.published":
            return set()
        vm = next((vm for vm in self.host.snapshot() if vm["VMId"] == resource["vm_id"]), None)
        if vm is None:
            return {f"vm {resource['vm_id']}"}  # recorded but gone: counted as missing
        disk = vm["VHDPath"].removeprefix(LOCAL_PATH + "\\").replace("\\", "/")
        return {f"vm {vm['VMId']}", f"file {disk}"}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """Each waiting task's VM: started, then, once the watch saw it run, turned off (at random)."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            vm = kinds.get("hyperv.vm")
            if vm is None:
                continue
            self.host.set_state(vm["name"], "Off" if "hyperv.vm_ran" in kinds else "Running")


@pytest.fixture
def hyperv_peer(smb_env: SambaPeer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HyperVPeer]:
    host = HyperVDouble(LOCAL_PATH, smb_env.share_dir)
    with served(host, monkeypatch):
        yield HyperVPeer(smb_env, host)


@pytest.mark.parametrize(("backend", "kills"), runs("hyperv"))
def test_hyperv_survives_kills(backend: str, kills: int, hyperv_peer: HyperVPeer, catalog_dir: Path,
                               tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = run_chaos(hyperv_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    assert hyperv_peer.host.logins, "no worker reached the served host"
    record_and_check(run)
