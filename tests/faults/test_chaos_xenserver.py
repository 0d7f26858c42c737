"""Chaos on XenServer (the XenAPI double, an XML-RPC server in a thread of the test process):
3 workers over 15 tasks, 30 SIGKILLs aimed in turn at compose, upload and the watch (the test
starts each waiting VM, then halts it, at random moments), on SQLite and PostgreSQL. The pool
then holds each Done task's VM with its disk, VBD and VIF, and nothing else."""

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
from tests.xenserver.conftest import PASSWORD, PASSWORD_ENV, USER, USER_ENV, connector
from tests.xenserver.xapi_double import XapiDouble

COVERS = ("xenserver",)
pytestmark = pytest.mark.timeout(300)


class XapiPeer:
    platform = "xenserver"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "xenserver")

    def __init__(self, double: XapiDouble) -> None:
        self.double = double

    def connector(self) -> dict[str, Any]:
        return connector(self.double)

    def objects(self) -> set[str]:
        state, given = self.double.state, self.double.given
        with self.double.lock:
            return {*(f"vm {v['uuid']}" for r, v in state.vms.items() if r not in given),
                    *(f"vdi {v['uuid']}" for r, v in state.vdis.items() if r not in given),
                    *(f"vbd {r}" for r in state.vbds if r not in given),
                    *(f"vif {r}" for r in state.vifs)}

    def recorded(self, task: Task) -> set[str]:
        """From the task's record: the published VM, the disk the task recorded, the one VBD
        joining them and one VIF. Another disk or VBD on that VM is not the task's: an orphan."""
        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "xenserver.published":
            return set()
        disk = next((r.get("uuid") for r in reversed(task.resources)
                     if isinstance(r, dict) and r.get("kind") == "xenserver.vdi"), None)
        state = self.double.state
        with self.double.lock:
            vm = state.vms.get(resource["ref"])
            if vm is None:
                return {f"vm {resource['uuid']}"}  # recorded but gone: counted as missing
            joining = [b for b in vm["VBDs"] if b in state.vbds
                       and state.vdis.get(state.vbds[b]["VDI"], {}).get("uuid") == disk]
            return {f"vm {vm['uuid']}", *(f"vdi {disk}" for _ in joining[:1]),
                    *(f"vbd {b}" for b in joining[:1]), *(f"vif {v}" for v in vm["VIFs"][:1])}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """Each waiting task's VM: started, then, once the watch saw it run, halted (at random)."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            vm = kinds.get("xenserver.vm")
            if vm is None or self.double.vm_by_name(vm["name"]) is None:
                continue
            self.double.set_power(vm["name"], "Halted" if "xenserver.vm_ran" in kinds else "Running")


@pytest.fixture
def xapi_peer(monkeypatch: pytest.MonkeyPatch) -> Iterator[XapiPeer]:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    double = XapiDouble({USER: PASSWORD}).start()
    try:
        yield XapiPeer(double)
    finally:
        double.stop()


@pytest.mark.parametrize(("backend", "kills"), runs("xenserver"))
def test_xenserver_survives_kills(backend: str, kills: int, xapi_peer: XapiPeer, catalog_dir: Path,
                                  tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = run_chaos(xapi_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    record_and_check(run)
