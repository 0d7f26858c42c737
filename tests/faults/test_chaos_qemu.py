"""Chaos on the local QEMU target: 3 workers over 15 tasks, 30 SIGKILLs (50 in the long variant)
aimed in turn at compose, upload (qemu-img convert into the VM folder) and the watch, on SQLite
and PostgreSQL. The test plays the operator and the guest: at random moments it starts a waiting
task's VM as `layerbot vm start` does (the real monitor and a real qemu-system under TCG), and
the guest, the smallest one that powers itself off (tests/qemu/poweroff_guest.py), ends the
watch with a real QMP guest-shutdown. Afterwards the VM folder holds each Done task's VM and
nothing else (no second VM, no partial disk or temp file), and no qemu-system, monitor or
qemu-img process of the run is left running.

A guest that powers off at once keeps a run within the other platforms' time (about 40 s per
database on 2 busy cores, as the local target's run), where the Debian layer would take minutes
per boot under TCG."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.qemu import vmfiles
from bot.store import states
from bot.store.model import Task
from tests.conftest import write_tar
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.qemu.poweroff_guest import os_layer_members
from tests.store.workers import LAYERBOT

COVERS = ("qemu",)
pytestmark = pytest.mark.timeout(300)
#: what a killed write may leave in a VM folder: qemu-img's output, vm.json's and state.json's
TEMP_SUFFIXES = (".partial", ".tmp")
TEMP_PREFIX = f".{vmfiles.STATE}."
#: the module `layerbot vm start` runs a VM's monitor with
MONITOR = b"adapters.qemu.monitor"


def _processes_under(folder: Path) -> dict[int, tuple[str, str]]:
    """pid -> (what runs, VM folder name) of each process with a path in ``folder`` on its
    command line: a VM's qemu-system (its ``-pidfile``) and monitor, a qemu-img still writing a
    disk of a killed worker."""
    found: dict[int, tuple[str, str]] = {}
    prefix = os.fsencode(f"{folder}{os.sep}")
    for pid, argv in vmfiles.command_lines():
        paths = [a for a in argv if a.startswith(prefix)]
        if paths:
            vm = os.fsdecode(paths[0][len(prefix):]).split(os.sep)[0]
            found[pid] = ("monitor" if MONITOR in argv else Path(os.fsdecode(argv[0])).name, vm)
    return found


class QemuPeer:
    """The VM folder and the VMs' processes; the operator and the guests in threads."""

    platform = "qemu"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (LAYERBOT,)  # no clients to shorten: the watch polls state files

    def __init__(self, vms: Path) -> None:
        vms.mkdir()
        self.vms = vms
        self.starting: dict[Path, threading.Thread] = {}
        self.start_errors: list[str] = []

    def connector(self) -> dict[str, Any]:
        return {"type": "qemu", "path": str(self.vms), "accel": "tcg", "memory_mb": 128, "cpus": 1}

    def objects(self) -> set[str]:
        found: set[str] = set()
        for entry in self.vms.iterdir():
            found.add(f"vm {entry.name}" if entry.is_dir() else f"file {entry.name}")
            if entry.is_dir():
                found |= {f"temp {entry.name}/{f.name}" for f in entry.iterdir()
                          if f.name.endswith(TEMP_SUFFIXES) or f.name.startswith(TEMP_PREFIX)}
        return found | {f"{kind} {pid} of {vm}" for pid, (kind, vm) in _processes_under(self.vms).items()}

    def recorded(self, task: Task) -> set[str]:
        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "qemu.vm":
            return set()
        return {f"vm {Path(resource['vm_dir']).relative_to(self.vms).as_posix()}"}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """The operator starts some waiting tasks' VMs (each once); their guest powers off."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            resource = (task.published or {}).get("resource") or {}
            vm_dir = Path(resource["vm_dir"]) if resource.get("kind") == "qemu.vm" else None
            if vm_dir is None or vm_dir in self.starting or vmfiles.read_state(vm_dir) is not None:
                continue
            thread = threading.Thread(target=self._start, args=(vm_dir,), name=f"start {vm_dir.name}")
            self.starting[vm_dir] = thread
            thread.start()

    def _start(self, vm_dir: Path) -> None:
        """What `layerbot vm start TASK` does once it found the task's VM folder."""
        try:
            vmfiles.start(vm_dir)
        except Exception as exc:  # the test fails on it, naming the VM
            self.start_errors.append(f"{vm_dir.name}: {exc!r}")

    def close(self) -> None:
        """Wait for the starts, then stop whatever VM process of this run is still running."""
        for thread in self.starting.values():
            thread.join(60)
        for pid in _processes_under(self.vms):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def qemu_peer(tmp_path: Path) -> Iterator[QemuPeer]:
    peer = QemuPeer(tmp_path / "vms")
    try:
        yield peer
    finally:
        peer.close()


def poweroff_layers(root: Path) -> Path:
    """The layers the harness's machines use: an OS layer that boots into the power-off guest
    and an app layer (a directory)."""
    root.mkdir()
    write_tar(root / "os.tar", os_layer_members())
    (root / "office" / "opt" / "office").mkdir(parents=True)
    (root / "office" / "opt" / "office" / "README").write_text("office\n")
    return root


@pytest.mark.parametrize(("backend", "kills"), runs("qemu"))
def test_qemu_target_survives_kills(backend: str, kills: int, qemu_peer: QemuPeer, tmp_path: Path,
                                    request: pytest.FixtureRequest) -> None:
    layers = poweroff_layers(tmp_path / "layers")
    run = run_chaos(qemu_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    layers, kills=kills)
    record_and_check(run)
    assert qemu_peer.start_errors == []


def test_the_peer_sees_a_stray_vm_folder_temp_file_and_qemu(qemu_peer: QemuPeer) -> None:
    """What the orphan check relies on: a VM folder no task records, a partial disk in a
    recorded one, a qemu-system still running for a VM."""
    ours, stray = qemu_peer.vms / "plain-1", qemu_peer.vms / "plain-2"
    vmfiles.create_owned_dir(ours, "t1")
    vmfiles.create_owned_dir(stray, "t2")
    (ours / f"{vmfiles.DISK}.partial").write_bytes(b"half")
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S",
                             "-display", "none", "-nic", "none", "-monitor", "none", "-serial", "none",
                             "-pidfile", str(ours / vmfiles.PIDFILE)])
    try:
        deadline = time.monotonic() + 30
        while vmfiles.qemu_pid(ours) is None:
            assert qemu.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        done = _done_task("t1", {"resource": {"kind": "qemu.vm", "vm_dir": str(ours), "task_id": "t1"}})
        assert qemu_peer.recorded(done) == {"vm plain-1"}
        assert qemu_peer.objects() - qemu_peer.recorded(done) == {
            "vm plain-2", f"temp plain-1/{vmfiles.DISK}.partial", f"qemu-system-x86_64 {qemu.pid} of plain-1"}
    finally:
        qemu.kill()
        qemu.wait()


def _done_task(task_id: str, published: dict[str, Any]) -> Task:
    return Task(id=task_id, template="plain", connector="folder", platform="QEMU", status=states.DONE,
                stage="", progress=100.0, requested_by="chaos", channel=None, message_ts=None,
                thread_ts=None, idempotency_key=None, link=None, error=None, created_at=0.0,
                updated_at=0.0, finished_at=0.0, image_name="plain-1", lease_owner=None,
                lease_until=0.0, cancel_requested=0, attempts=1, resources=[], published=published)
