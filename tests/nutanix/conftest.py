"""The Prism double on a random loopback port over TLS (a trustme CA), a qcow2 disk, and
connectors and adapters pointed at the double."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters import config_model, create
from adapters.base import PublishContext
from adapters.nutanix import Adapter, Clients, Config
from adapters.resources import Resource
from adapters.retry import RetryPolicy

from .prism_double import PrismDouble

USER, PASSWORD = "layerbot-admin", "Pr1sm-s3cret.Value"
CLUSTER, CONTAINER, SUBNET = "ahv-1", "default-container", "vlan100"
FAST = Clients(task_poll=(0.01, 0.05), watch_poll=(0.02, 0.1), call_timeout=10,
               upload_idle_timeout=10, upload_chunk=1 << 18,
               retry=RetryPolicy(attempts=3, budget=10, first_delay=0.01, max_delay=0.05))


@pytest.fixture(scope="session")
def prism_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[trustme.CA, Path]]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("prism-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield ca, ca_file


@pytest.fixture
async def prism(prism_ca: tuple[trustme.CA, Path], monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[PrismDouble]:
    monkeypatch.setenv("PRISM_USER", USER)
    monkeypatch.setenv("PRISM_PASSWORD", PASSWORD)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    prism_ca[0].issue_cert("127.0.0.1").configure_cert(server)
    double = PrismDouble(USER, PASSWORD)
    cluster = "0005f0d1-aaaa-4bbb-8ccc-000000000001"
    double.clusters[cluster] = CLUSTER
    double.subnets["b2e46975-2cde-4a49-9dda-815eb4fcd679"] = SUBNET
    double.containers["8a77ce4a-5730-44ea-a281-4c81b1277333"] = (CONTAINER, cluster)
    await double.start(server)
    try:
        yield double
    finally:
        await double.close()


def connector(double: PrismDouble, ca_file: Path, **overrides: Any) -> Config:
    settings = {"type": "nutanix", "prism_url": double.url, "user_env": "PRISM_USER",
                "password_env": "PRISM_PASSWORD", "ca_file": str(ca_file), "cluster": CLUSTER,
                "container": CONTAINER, "subnet": SUBNET, **overrides}
    return config_model("nutanix").model_validate(settings)  # type: ignore[return-value]


def make_adapter(double: PrismDouble, ca_file: Path, clients: Clients = FAST,
                 **overrides: Any) -> Adapter:
    return create(connector(double, ca_file, **overrides), clients)  # type: ignore[return-value]


def qcow2_disk(path: Path, mib: int = 4) -> Path:
    """A qcow2 with random data all through (what the compositor gives a nutanix target)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        f.write(os.urandom(mib << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()
    return path


def context(artifact: Path, name: str, notes: list[tuple[float, str]] | None = None,
            resources: list[Resource] | None = None,
            stored: list[list[Resource]] | None = None) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append((fraction, note))

    async def persist(now: list[Resource]) -> None:
        if stored is not None:
            stored.append(list(now))

    return PublishContext(task_id="t0c0ffee", template="win10", image_name=name,
                          artifact=artifact, artifact_format="qcow2",
                          virtual_size=4 << 20, progress=progress, persist=persist,
                          resources=list(resources or []))
