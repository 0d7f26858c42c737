"""GCP through the fault proxy: one proxy in front of the Cloud Storage peer (the emulator behind
tests/gcp's fixing proxy), another in front of the Compute double, both at a 20 % fault rate. A
publish either succeeds or fails with GCP's message, and after the runner's cleanup the bucket
holds no object and the double no image or instance of the task."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PublishContext
from adapters.gcp import Adapter
from adapters.gcp.gcp_resources import GcpPublished
from adapters.retry import RetryPolicy
from tests.faults.figures import fault_run, record
from tests.faults.proxy import FaultProxy, FaultSchedule
from tests.faults.runs import compare, publish_under_faults, published
from tests.gcp.compute_double import ComputeDouble
from tests.gcp.compute_fixtures import clients, compute, connector, context, object_check
from tests.gcp.conftest import BUCKET, Proxy, emulator, gcs

__all__ = ["compute", "emulator", "gcs"]
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("gcp",)
pytestmark = pytest.mark.timeout(120)
CHUNK = 256 * 1024
QUICK = RetryPolicy(attempts=4, budget=30.0, first_delay=0.05, max_delay=0.2)
SEEDS = tuple(range(1, 9))


@dataclass
class Peers:
    compute: ComputeDouble
    storage: FaultProxy
    api: FaultProxy

    @property
    def proxies(self) -> list[FaultProxy]:
        return [self.storage, self.api]


@pytest.fixture
async def peers(request: pytest.FixtureRequest, compute: ComputeDouble, gcs: Proxy
                ) -> AsyncIterator[Peers]:
    seed = request.node.callspec.params["seed"]
    # stalls outlast the storage client's timeout (1 s, set below)
    async with FaultProxy(gcs.url, FaultSchedule(seed=seed, rate=0.2), stall_seconds=2.0,
                          client_max_size=8 << 20) as storage, \
            FaultProxy(compute.url, FaultSchedule(seed=seed + 1000, rate=0.2)) as api:
        compute.object_exists = object_check(gcs.url)  # the double's own check: no faults
        yield Peers(compute, storage, api)


def leftovers(peers: Peers, emulator: Any) -> list[str]:
    """The bucket's objects (from the emulator's state, not through the proxies) and the
    double's images, instances and disks."""
    found, _ = emulator.storage.get_file_list(BUCKET)
    compute = peers.compute
    return ([f"object {o['name']}" for o in found]
            + [f"image {n}" for n in compute.images]
            + [f"instance {zone}/{n}" for zone, n in compute.instances]
            + [f"disk {zone}/{n}" for zone, n in compute.disks])


def kept(ctx: PublishContext) -> list[str]:
    """A successful publish leaves its published image alone (the uploaded object fed it)."""
    return [f"image {published(ctx, GcpPublished).name}"]


def check_gcp_error(error: str) -> None:
    assert error.startswith(("gcp", "GCP", "Google")), error


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        peers: Peers, emulator: Any, tmp_path: Path, seed: int) -> None:
    name = f"faults-gcp-{seed}"
    artifact = tmp_path / "disk.tar.gz"
    artifact.write_bytes(os.urandom(12 * CHUNK + 1000))
    cfg = connector(peers.compute, peers.storage.url).model_copy(
        update={"compute_endpoint": peers.api.url})
    adapter = Adapter(cfg, clients(chunk_size=CHUNK, timeout=1.0, retry=QUICK))
    ctx = context(name, artifact)
    error = await publish_under_faults(adapter, ctx, lambda: [proxy.heal() for proxy in peers.proxies],
                                       check_gcp_error)
    left = compare(leftovers(peers, emulator), kept(ctx) if error is None else [])
    record(fault_run("gcp", seed, peers.proxies, error=error, orphans=left.orphans))
    assert sum(p.total_injected for p in peers.proxies) > 0
    if error is None:
        assert peers.compute.images[name]["status"] == "READY"
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not there"
    assert left.orphans == [], (f"seed {seed} ({error}) left {left.orphans}; faults "
                                f"{[i for p in peers.proxies for i in p.injections]}")
