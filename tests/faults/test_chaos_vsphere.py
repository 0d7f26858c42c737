"""Chaos on vSphere (vcsim, govmomi's vCenter simulator, a Go process started per test and
served over TLS with a certificate the connector pins): 3 workers over 15 tasks, 30 SIGKILLs
aimed in turn at compose, upload (the OVF import: ImportVApp, the lease, the NFC upload) and
the watch (the test powers each waiting VM on, then off, at random moments), on SQLite and
PostgreSQL. vcsim then holds each Done task's VM and its datastore files, and nothing else: no
second VM of a task, no VM of an import whose answer was lost, no file of a removed VM."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters import config_model, create
from adapters.base import publish
from adapters.vsphere import VSpherePublished
from bot.catalog import Catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.model import Task
from bot.store.task_store import TaskStore
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.vsphere.clients import short_clients
from tests.vsphere.conftest import (
    PASSWORD,
    PASSWORD_ENV,
    USER,
    USER_ENV,
    Recorder,
    VcSim,
    connector,
    make_raw_disk,
    run_task,
    vcsim_binary,
)
from tests.vsphere.simulator import start_vcsim

__all__ = ["vcsim_binary"]
COVERS = ("vsphere",)
pytestmark = pytest.mark.timeout(300)


class VcSimPeer:
    """vcsim, listed through the test's own pyvmomi session and its datastores' folders (each
    datastore of vcsim is a local directory)."""

    platform = "vsphere"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "vsphere")

    def __init__(self, sim: VcSim, ca_file: Path) -> None:
        self.sim = sim
        self.ca_file = ca_file
        #: the simulator's own inventory (its VMs and their files): not a publish's
        self.before = self._everything()

    def connector(self) -> dict[str, Any]:
        return connector(self.sim, insecure=False, ca_file=str(self.ca_file))

    def _view(self, kind: Any) -> list[Any]:
        content = self.sim.si().content
        view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
        try:
            return list(view.view)
        finally:
            view.DestroyView()

    def _datastores(self) -> dict[str, Path]:
        from pyVmomi import vim

        return {ds.name: Path(ds.info.url) for ds in self._view(vim.Datastore)}

    def _everything(self) -> set[str]:
        from pyVmomi import vim

        vms = {f"vm {vm._moId} {vm.name}" for vm in self._view(vim.VirtualMachine)}
        paths = {f"file [{name}] {p.relative_to(root).as_posix()}"
                 for name, root in self._datastores().items() if root.is_dir()
                 for p in root.rglob("*")}
        return vms | paths

    def objects(self) -> set[str]:
        return self._everything() - self.before

    def recorded(self, task: Task) -> set[str]:
        """The published VM, its folder on the datastore and the files in it."""
        from pyVmomi import vim, vmodl

        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "vsphere.published":
            return set()
        moref, name = resource["moref"], resource["name"]
        vm = vim.VirtualMachine(moref, self.sim.si()._stub)
        try:
            vmx = vm.config.files.vmPathName
        except vmodl.fault.ManagedObjectNotFound:
            return {f"vm {moref} {name}"}  # recorded but gone: counted as missing
        datastore, _, path = vmx.partition("] ")
        root = self._datastores()[datastore.removeprefix("[")]
        folder = root / Path(path).parent
        return {f"vm {moref} {name}",
                *(f"file {datastore}] {p.relative_to(root).as_posix()}"
                  for p in (folder, *folder.rglob("*")))}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """Each waiting task's VM: powered on (the guest boots), then, once the watch recorded
        that, off (its scripts ran and it shut down): each step at random."""
        from pyVmomi import vim, vmodl

        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            recorded = kinds.get("vsphere.vm")
            if recorded is None:
                continue
            vm = vim.VirtualMachine(recorded["moref"], self.sim.si()._stub)
            try:
                state = vm.runtime.powerState
                if "vsphere.powered_on" in kinds and state == "poweredOn":
                    run_task(self.sim, vm.PowerOffVM_Task())
                elif "vsphere.powered_on" not in kinds and state == "poweredOff":
                    run_task(self.sim, vm.PowerOnVM_Task())
            except vmodl.fault.ManagedObjectNotFound:
                continue  # removed since the task was read


@pytest.fixture
def vcsim_peer(vcsim_binary: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[VcSimPeer]:
    """vcsim serving a certificate of a CA the connector pins; stopped after the test."""
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    ca = trustme.CA()
    ca_file, cert_file, key_file = (tmp_path / n for n in ("vc-ca.pem", "vc-cert.pem", "vc-key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    sim = start_vcsim(vcsim_binary, "-cert", str(cert_file), "-key", str(key_file))
    try:
        yield VcSimPeer(sim, ca_file)
    finally:
        sim.stop()


async def test_the_peer_counts_a_vm_no_task_records_and_its_files(
        vcsim_peer: VcSimPeer, catalog: Catalog, store: TaskStore, tmp_path: Path) -> None:
    """What the chaos runs compare: a Done task's VM with its folder and files, and another
    publish's VM (which no task records) with its own, until it is destroyed."""
    adapter = create(config_model("vsphere").model_validate(vcsim_peer.connector()),
                     short_clients())
    disk = make_raw_disk(tmp_path / "disk.img", size_mib=24)
    try:
        kept = await publish(adapter, Recorder().context(disk, "chaos-kept"))
        stray = await publish(adapter, Recorder().context(disk, "chaos-stray"))
        task = enqueue(store, plan(catalog, "win10-office", check_cache=False), requested_by="t")[0]
        done = dataclasses.replace(task, status=states.DONE, published=kept.to_json())
        recorded = vcsim_peer.recorded(done)
        assert {o.split(" ")[0] for o in recorded} == {"vm", "file"}
        assert {"file [LocalDS_0] chaos-kept", "file [LocalDS_0] chaos-kept/chaos-kept.vmx"} < recorded
        orphans = vcsim_peer.objects() - recorded
        assert f"vm {stray.expect(VSpherePublished).moref} chaos-stray" in orphans
        assert "file [LocalDS_0] chaos-stray/chaos-stray.vmx" in orphans
        assert all("chaos-stray" in o for o in orphans)
        await adapter.unpublish(stray)
        assert vcsim_peer.objects() == recorded
    finally:
        await adapter.close()


@pytest.mark.parametrize(("backend", "kills"), runs("vsphere"))
def test_vsphere_survives_kills(backend: str, kills: int, vcsim_peer: VcSimPeer, catalog_dir: Path,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = run_chaos(vcsim_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    record_and_check(run)
