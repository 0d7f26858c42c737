"""vcsim fixtures (see simulator.py) and publish helpers for the vSphere adapter tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PublishContext, clean_up
from adapters.resources import R, Resource, latest
from adapters.steps import Outcome

from .simulator import (
    PASSWORD,
    PASSWORD_ENV,
    USER,
    USER_ENV,
    VcSim,
    VcSimUnavailable,
    build_vcsim,
    start_vcsim,
)

__all__ = ["PASSWORD", "PASSWORD_ENV", "USER", "USER_ENV", "VcSim"]


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    try:
        return build_vcsim()
    except VcSimUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def vcsim(vcsim_binary: Path) -> Iterator[VcSim]:
    try:
        sim = start_vcsim(vcsim_binary)
    except VcSimUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield sim
    sim.stop()


@pytest.fixture
def vc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def make_raw_disk(path: Path, size_mib: int = 64) -> Path:
    """A sparse GPT disk with a few MiB of random and repetitive data."""
    with open(path, "wb") as f:
        f.truncate(size_mib * 2**20)
    subprocess.run(["sgdisk", "-n1:2048:+16M", "-t1:ef00", "-n2:0:0", "-t2:8304", str(path)],
                   check=True, capture_output=True)
    with open(path, "r+b") as f:
        f.seek(3 * 2**20)
        f.write(os.urandom(3 * 2**20))
        f.seek(20 * 2**20)
        f.write(b"layerbot layered image " * 100_000)
        f.seek(size_mib * 2**20 - 4096)
        f.write(os.urandom(4096))
    return path


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    return make_raw_disk(tmp_path / "disk.img")


@dataclass
class Recorder:
    """What the runner would see: progress notes and recorded resources."""

    progress: list[tuple[float, str]] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)
    #: the last context made (its ``removed`` lists what the publish's own cleanup removed)
    ctx: PublishContext | None = None

    def context(self, artifact: Path, name: str, *, watch_timeout: float = 60.0
                ) -> PublishContext:
        async def progress(fraction: float, note: str) -> None:
            self.progress.append((fraction, note))
            for hook in list(self.hooks):
                await hook(fraction, note)

        self.ctx = PublishContext(
            task_id="t1", template="win10-office", image_name=name, artifact=artifact,
            artifact_format="raw", virtual_size=artifact.stat().st_size, progress=progress,
            resources=self.resources, watch_timeout=watch_timeout)
        return self.ctx

    def latest(self, cls: type[R]) -> R | None:
        return latest(self.resources, cls)

    async def cleanup(self, adapter: Any) -> list[str]:
        """What a runner does with the recorded resources after a failure or a crash."""
        assert self.ctx is not None
        return await clean_up(adapter, self.ctx, Outcome.FAILED)


def connector(sim: VcSim, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "vsphere", "host": sim.host, "port": sim.port, "user_env": USER_ENV,
        "password_env": PASSWORD_ENV, "insecure": True, "datacenter": "DC0",
        "cluster": "DC0_C0", "datastore": "LocalDS_0", "network": "VM Network", "mode": "vm",
    }
    data.update(overrides)
    return data


def find_vms(sim: VcSim, name: str) -> list[Any]:
    """VMs (and templates) named ``name`` in vcsim."""
    from pyVmomi import vim

    si = sim.si()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if vm.name == name]
    finally:
        view.DestroyView()


def run_task(sim: VcSim, task: Any) -> Any:
    from adapters.vsphere.vm import wait_task

    return wait_task(sim.si(), task, "test task")


#: (method name, its result) -> the result the adapter sees
AfterCall = Any


def watching_stub(after: AfterCall) -> Any:
    """A stub factory (``Clients.connect``) whose SOAP method results pass ``after`` first:
    a real vcsim peer whose answers a test can bend, injected instead of patching modules."""
    from adapters.vsphere.session import soap_stub

    def connect(host: str, port: int, ssl_ctx: Any, timeout: float) -> Any:
        stub = soap_stub(host, port, ssl_ctx, timeout)
        invoke = stub.InvokeMethod

        def invoke_then(mo: Any, info: Any, args: Any) -> Any:
            return after(info.name, invoke(mo, info, args))

        stub.InvokeMethod = invoke_then
        return stub

    return connect
