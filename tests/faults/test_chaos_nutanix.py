"""Chaos on Nutanix AHV (the Prism double, served from a thread of the test process over TLS):
3 workers over 15 tasks, 30 SIGKILLs aimed in turn at compose, upload and the watch (the test
powers each waiting VM on, then off, at random moments), on SQLite and PostgreSQL. Prism then
holds each Done task's VM and nothing else (no staging image, no second VM)."""

from __future__ import annotations

import asyncio
import random
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from bot.store import states
from bot.store.model import Task
from tests.faults.chaos import database, record_and_check, run_chaos, runs
from tests.nutanix.conftest import CLUSTER, CONTAINER, PASSWORD, SUBNET, USER
from tests.nutanix.prism_double import PrismDouble

COVERS = ("nutanix",)
pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")


class PrismPeer:
    """The Prism double on its own event loop in a thread: the workers are other processes."""

    platform = "nutanix"
    stages = (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED)
    command = (sys.executable, "-m", "tests.faults.chaos_worker", "nutanix")

    def __init__(self, ca_file: Path, tls: ssl.SSLContext) -> None:
        self.ca_file = ca_file
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="prism-double", daemon=True)
        self.thread.start()
        self.double = PrismDouble(USER, PASSWORD)
        cluster = "0005f0d1-aaaa-4bbb-8ccc-000000000001"
        self.double.clusters[cluster] = CLUSTER
        self.double.subnets["b2e46975-2cde-4a49-9dda-815eb4fcd679"] = SUBNET
        self.double.containers["8a77ce4a-5730-44ea-a281-4c81b1277333"] = (CONTAINER, cluster)
        asyncio.run_coroutine_threadsafe(self.double.start(tls), self.loop).result(30)

    def _on_loop(self, call: Callable[[], T]) -> T:
        async def run() -> T:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.double.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def connector(self) -> dict[str, Any]:
        return {"type": "nutanix", "prism_url": self.double.url, "user_env": "PRISM_USER",
                "password_env": "PRISM_PASSWORD", "ca_file": str(self.ca_file), "cluster": CLUSTER,
                "container": CONTAINER, "subnet": SUBNET}

    def objects(self) -> set[str]:
        return self._on_loop(lambda: {*(f"image {u}" for u in self.double.images),
                                      *(f"vm {u}" for u in self.double.vms)})

    def recorded(self, task: Task) -> set[str]:
        resource = (task.published or {}).get("resource") or {}
        return {f"vm {resource['uuid']}"} if resource.get("kind") == "nutanix.published" else set()

    def tend_guests(self, rng: random.Random, tasks: list[Task]) -> None:
        """Each waiting task's VM: powered on (the guest boots), then, once the watch recorded
        that, off (its scripts ran): each step at random."""
        for task in tasks:
            if task.status != states.ACTION_REQUIRED or rng.random() < 0.5:
                continue
            kinds = {r.get("kind"): r for r in task.resources if isinstance(r, dict)}
            vm = kinds.get("nutanix.vm")
            if vm is None:
                continue
            state = "OFF" if "nutanix.powered_on" in kinds else "ON"
            self._on_loop(lambda uuid=vm["uuid"], state=state: (
                self.double.power(uuid, state) if uuid in self.double.vms else None))


@pytest.fixture
def prism_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrismPeer]:
    monkeypatch.setenv("PRISM_USER", USER)
    monkeypatch.setenv("PRISM_PASSWORD", PASSWORD)
    ca = trustme.CA()
    ca_file = tmp_path / "prism-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    peer = PrismPeer(ca_file, tls)
    try:
        yield peer
    finally:
        peer.close()


@pytest.mark.parametrize(("backend", "kills"), runs("nutanix"))
def test_nutanix_survives_kills(backend: str, kills: int, prism_peer: PrismPeer, catalog_dir: Path,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = run_chaos(prism_peer, database(backend, request, tmp_path), backend, tmp_path / "chaos",
                    catalog_dir / "layers", kills=kills)
    record_and_check(run)
