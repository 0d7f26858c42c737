"""A runner killed inside the import: what the task store holds at that moment is all the next
runner (another process, another vCenter session) has to clean up with, and it must find the
VM ImportVApp made, even when the answer naming the lease was never recorded, or the lease
(kept by the dead session) can no longer be read. The next publish of the task then makes one
VM, not a second one next to an orphan."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import PlatformError, publish
from adapters.blocking import SessionPool
from adapters.resources import Resource
from adapters.vsphere import Clients, VSphereImport, VSpherePublished

from .conftest import Recorder, VcSim, connector, find_vms, watching_stub

pytestmark = pytest.mark.timeout(120)


class Freeze:
    """A ``watching_stub`` hook: once ``moment`` holds after a SOAP call, the runner's thread
    stops there (as a killed process would) until the test lets it fail."""

    def __init__(self, moment: Callable[[str], bool]) -> None:
        self.moment = moment
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, method: str, result: Any) -> Any:
        if not self.reached.is_set() and self.moment(method):
            self.reached.set()
            self.release.wait(60)
            raise RuntimeError("the runner was killed")
        return result


def datastore_files(sim: VcSim, name: str) -> list[Path]:
    from pyVmomi import vim

    content = sim.si().content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    try:
        roots = [Path(ds.info.url) for ds in view.view]
    finally:
        view.DestroyView()
    return [p for root in roots if root.is_dir() for p in root.rglob(f"*{name}*")]


def adapter_of(sim: VcSim, clients: Clients) -> Any:
    return create(config_model("vsphere").model_validate(connector(sim)), clients)


def lease_recorded(resources: list[Resource]) -> Callable[[str], bool]:
    """The first SOAP answer after the lease was recorded, before its VM was."""
    def moment(method: str) -> bool:
        return any(isinstance(r, VSphereImport) and r.lease and r.vm is None for r in resources)

    return moment


@pytest.mark.parametrize("killed", ["ImportVApp answered", "lease recorded, not its VM"])
async def test_the_next_runner_removes_the_vm_of_an_import_killed_midway(
        vcsim: VcSim, vc_env: None, raw_disk: Path, killed: str) -> None:
    name = f"killed-{killed.split()[0].lower()}"
    rec = Recorder()
    freeze = Freeze((lambda method: method == "ImportVApp") if killed == "ImportVApp answered"
                    else lease_recorded(rec.resources))
    dying = adapter_of(vcsim, Clients(connect=watching_stub(freeze), wait_seconds=1,
                                      sessions=SessionPool()))
    work = asyncio.create_task(publish(dying, rec.context(raw_disk, name)))
    try:
        assert await asyncio.to_thread(freeze.reached.wait, 60)
        left = list(rec.resources)  # what the task store holds when the process dies here
        assert len(find_vms(vcsim, name)) == 1

        # the next runner: another process, its own vCenter session
        nxt = adapter_of(vcsim, Clients(wait_seconds=1, sessions=SessionPool()))
        after = Recorder(resources=left)
        after.context(raw_disk, name)
        removed = await after.cleanup(nxt)
        assert find_vms(vcsim, name) == [], removed
        assert datastore_files(vcsim, name) == []
        assert after.resources == []

        published = await publish(nxt, after.context(raw_disk, name))
        assert [vm._moId for vm in find_vms(vcsim, name)] == [
            published.expect(VSpherePublished).moref]
        await nxt.close()
    finally:
        freeze.release.set()
        with pytest.raises(PlatformError, match="the runner was killed"):
            await work
        await dying.close()
