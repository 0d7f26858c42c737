"""Chaos on Azure (``azure`` and ``azure-mcs``): the ARM double, served over TLS from its own
event loop in a thread of the test process, and Azurite (a node process) holding the disks'
page blobs. 3 workers over 15 tasks, 30 SIGKILLs aimed in turn at compose, the upload (and
the image) and, for ``azure``, the watch (the test makes a VM from each waiting task's image
in the admins' resource group, then deallocates it once the watch saw it run), on SQLite and
PostgreSQL. Afterwards the double holds each Done task's image (or gallery image version) and
nothing else: no disk, no blob, no second image or version; and no two tasks share one."""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.store import states
from bot.store.backends import open_store
from bot.store.model import Task
from tests.azure.arm_double import ArmDouble, Blobs
from tests.azure.arm_fixtures import SECRET, SECRET_ENV, Tls, arm_tls, connector, make_double, serve
from tests.azure.azurite import ACCOUNT, KEY, Azurite
from tests.azure.fast_clients import CA_ENV, TOKEN_ENV
from tests.faults.chaos import database, record_and_check, run_chaos, runs

__all__ = ["arm_tls"]
COVERS = ("azure", "azure-mcs")
pytestmark = [pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]
T = TypeVar("T")
#: where the admins make their VMs (the guests): theirs, not a publish's, so not counted
GUESTS_GROUP = "admins-vms"


class ArmPeer:
    """The ARM double on its own event loop in a thread (the workers are other processes), its
    disks' page blobs in a container of Azurite's of its own."""

    command: tuple[str, ...]
    stages: tuple[str, ...]

    def __init__(self, platform: str, azurite: Azurite, tls: Tls) -> None:
        self.platform = platform
        self.command = (sys.executable, "-m", "tests.faults.chaos_worker", platform)
        # azure-mcs has no watch: its task is Done once the image version exists
        self.stages = ((states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
                       if platform == "azure" else (states.COMPOSITING, states.UPLOADING))
        self.container = f"chaos{secrets.token_hex(4)}"
        self.azurite = azurite
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="arm-double", daemon=True)
        self.thread.start()
        self.double: ArmDouble = make_double(Blobs(azurite.account_url, ACCOUNT, KEY,
                                                   container=self.container))
        self.runner = asyncio.run_coroutine_threadsafe(serve(self.double, tls), self.loop).result(30)

    def _on_loop(self, call: Callable[[], T]) -> T:
        async def run() -> T:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def connector(self) -> dict[str, Any]:
        if self.platform == "azure-mcs":  # one name a minute: the runners' tasks contend for it
            return connector(self.double, self.platform, version="{yyyy}.{mm}{dd}.{hhmm}")
        return connector(self.double, self.platform)

    def objects(self) -> set[str]:
        """Every disk, image, gallery image version and VM (but the admins' guests) the double
        holds, and every blob of its container (a disk's, or one left without its disk)."""
        double = self.double
        held = self._on_loop(lambda: {
            *(f"disk {d['id'].lower()}" for d in double.disks.values()),
            *(f"image {i['id'].lower()}" for i in double.images.values()),
            *(f"version {v['id'].lower()}" for v in double.versions.values()),
            *(f"vm {v['id'].lower()}" for k, v in double.vms.items()
              if not k.startswith(f"{GUESTS_GROUP}/"))})
        return held | {f"blob {name}" for name in self.blobs()}

    def blobs(self) -> list[str]:
        from azure.storage.blob import ContainerClient

        with ContainerClient(self.azurite.account_url, self.container, credential={
                "account_name": ACCOUNT, "account_key": KEY}) as container:
            return [b.name for b in container.list_blobs()] if container.exists() else []

    def definitions(self) -> set[str]:
        return self._on_loop(lambda: set(self.double.definitions))

    def recorded(self, task: Task) -> set[str]:
        """The managed image (``azure``) or gallery image version (``azure-mcs``) the task
        published; its upload disk was staging (deleted once the image existed)."""
        resource = (task.published or {}).get("resource") or {}
        if resource.get("kind") != "azure.published":
            return set()
        label = "image" if resource["what"] == "image" else "version"
        return {f"{label} {resource['id'].lower()}"}

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """An admin makes a VM from each waiting task's image (Azure starts it); once the
        watch recorded it running, the admin deallocates it: each step at random."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            image = kinds.get("azure.image")
            if image is not None:
                ran = "azure.powered_on" in kinds
                self._on_loop(lambda image_id=image["id"], ran=ran: self._guest(image_id, ran))

    def _guest(self, image_id: str, ran: bool) -> None:
        double = self.double
        image = next((i for i in double.images.values() if i["id"].lower() == image_id.lower()),
                     None)
        if image is None or image["properties"].get("provisioningState") != "Succeeded":
            return
        name = f"guest-{image['name']}"[:64]
        key = f"{GUESTS_GROUP}/{name}".lower()
        vm = double.vms.get(key)
        if vm is None:
            double.vms[key] = {
                "id": double._id(GUESTS_GROUP, "virtualMachines", name), "name": name,
                "type": "Microsoft.Compute/virtualMachines", "location": double.location,
                "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                               "storageProfile": {"imageReference": {"id": image["id"]}},
                               "provisioningState": "Succeeded",
                               "timeCreated": datetime.now(UTC).isoformat()},
                "_power": "running"}
        elif ran and vm["_power"] == "running":
            vm["_power"] = "deallocated"


@pytest.fixture
def arm_peer(request: pytest.FixtureRequest, azurite: Azurite, arm_tls: Tls,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[ArmPeer]:
    peer = ArmPeer(request.param, azurite, arm_tls)
    # the workers inherit these: the connector's secret, and how they reach the double
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, peer.double.static_token)
    monkeypatch.setenv(CA_ENV, str(arm_tls.ca_file))
    try:
        yield peer
    finally:
        peer.close()


@pytest.mark.parametrize(("arm_peer", "backend", "kills"), [
    pytest.param(platform, *run.values, id=f"{platform}-{run.id}", marks=run.marks)
    for platform in ("azure", "azure-mcs") for run in runs(platform)], indirect=["arm_peer"])
def test_azure_survives_kills(backend: str, kills: int, arm_peer: ArmPeer, catalog_dir: Path,
                              tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db = database(backend, request, tmp_path)
    run = run_chaos(arm_peer, db, backend, tmp_path / "chaos", catalog_dir / "layers", kills=kills)
    record_and_check(run)
    # each Done task published its own image or version: no two share one (a name taken twice)
    store = open_store(db)
    try:
        results = [arm_peer.recorded(t) for t in store.list_tasks(limit=1000)]
    finally:
        store.close()
    assert len(results) == run.tasks and all(len(r) == 1 for r in results), results
    assert len(set().union(*results)) == run.tasks, sorted(sorted(r) for r in results)
    if arm_peer.platform == "azure-mcs":  # made by the first task, kept for the later versions
        assert arm_peer.definitions() == {"layering/layering_gallery/linux-vda"}
