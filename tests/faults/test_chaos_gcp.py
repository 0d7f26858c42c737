"""Chaos on Google Cloud (the Cloud Storage emulator behind tests/gcp's fixing proxy, and the
Compute double, served by this test's event loop while the harness runs in a thread): 3 workers
over 15 tasks, 30 SIGKILLs aimed in turn at compose, upload and the watch (the test boots a VM
from each waiting task's image, then stops it, at random moments), on SQLite and PostgreSQL.
Afterwards the project holds each Done task's image and nothing else: no object in the bucket,
no second image."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.store import states
from bot.store.model import Task
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.gcp.compute_double import SELF, ComputeDouble
from tests.gcp.compute_fixtures import ZONE, compute, connector, object_check
from tests.gcp.conftest import BUCKET, Proxy, emulator, gcs

__all__ = ["compute", "emulator", "gcs"]
COVERS = ("gcp",)
pytestmark = pytest.mark.timeout(300)
#: the guests' VMs are the user's, not layerbot's: not counted as objects at the peer
GUEST_PREFIX = "guest-"


class GcpPeer:
    platform = "gcp"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "gcp")

    def __init__(self, double: ComputeDouble, storage: Proxy, emulator: Any,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.double, self.storage, self.emulator, self.loop = double, storage, emulator, loop

    def connector(self) -> dict[str, Any]:
        return connector(self.double, self.storage.url).model_dump(mode="json", exclude_none=True)

    def objects(self) -> set[str]:
        async def listed() -> set[str]:
            found, _ = self.emulator.storage.get_file_list(BUCKET)
            instances = [f"{z}/{n}" for z, n in self.double.instances if not n.startswith(GUEST_PREFIX)]
            return {*(f"object {o['name']}" for o in found), *(f"image {n}" for n in self.double.images),
                    *(f"instance {i}" for i in instances)}

        return asyncio.run_coroutine_threadsafe(listed(), self.loop).result(30)

    def recorded(self, task: Task) -> set[str]:
        resource = (task.published or {}).get("resource") or {}
        return {f"image {resource['name']}"} if resource.get("kind") == "gcp.published" else set()

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """A VM booted from each waiting task's image, then, once the watch saw it run, stopped."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            image = kinds.get("gcp.image")
            if image is not None:
                ran = "gcp.instance_ran" in kinds
                asyncio.run_coroutine_threadsafe(self._guest(image["name"], ran), self.loop).result(30)

    async def _guest(self, image_name: str, ran: bool) -> None:
        image = self.double.images.get(image_name)
        if image is None or image.get("status") != "READY":
            return
        name = f"{GUEST_PREFIX}{image_name}"[:63]
        inst = self.double.instances.get((ZONE, name))
        if inst is None:
            base = f"{SELF}/projects/{self.double.project}/zones/{ZONE}"
            link, disk = f"{base}/instances/{name}", f"{base}/disks/{name}"
            self.double.disks[(ZONE, name)] = {"kind": "compute#disk", "name": name, "selfLink": disk,
                                               "sourceImage": image["selfLink"], "users": [link],
                                               "zone": base}
            inst = {"kind": "compute#instance", "name": name, "id": str(next(self.double._ids)),
                    "status": "RUNNING", "selfLink": link, "machineType": f"{base}/machineTypes/e2-small",
                    "zone": base,
                    "disks": [{"boot": True, "source": disk, "deviceName": name, "index": 0}]}
            self.double._set_status(inst, "RUNNING")
            self.double.instances[(ZONE, name)] = inst
        elif ran and inst["status"] == "RUNNING":
            self.double._set_status(inst, "TERMINATED")


@pytest.mark.parametrize(("backend", "kills"), runs("gcp"))
async def test_gcp_survives_kills(backend: str, kills: int, compute: ComputeDouble, gcs: Proxy,
                                  emulator: Any, catalog_dir: Path, tmp_path: Path,
                                  request: pytest.FixtureRequest) -> None:
    compute.object_exists = object_check(gcs.url)
    peer = GcpPeer(compute, gcs, emulator, asyncio.get_running_loop())
    db = database(backend, request, tmp_path)
    run = await asyncio.to_thread(run_chaos, peer, db, backend, tmp_path / "chaos",
                                  catalog_dir / "layers", kills=kills)
    record_and_check(run)
