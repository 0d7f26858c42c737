"""Azure (the azure and azure-mcs adapters) through the fault proxy: one proxy terminates TLS in
front of the ARM double, another sits in front of Azurite (the disks' SAS URLs lead to it), both
at a 20 % fault rate. A publish either succeeds or fails with Azure's message, and after the
runner's cleanup neither the double nor Azurite holds anything of the task; an ARM endpoint
whose certificate changes under the pinned CA is refused."""

from __future__ import annotations

import dataclasses
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from adapters import create
from adapters.azure.azure_config import AzureConfig, McsConfig
from adapters.azure.azure_resources import AzureDefinitionCreated, AzurePublished
from adapters.azure_blob.pages import BlobOptions
from adapters.base import AdapterError, PublishContext, publish
from tests.azure.arm_double import ArmDouble, Blobs
from tests.azure.arm_fixtures import (
    FAST,
    SECRET,
    SECRET_ENV,
    Tls,
    arm_tls,
    clients,
    config,
    make_double,
    serve,
)
from tests.azure.azurite import ACCOUNT, KEY, Azurite
from tests.azure.test_azure_publish import context, vhd
from tests.faults.figures import fault_run, record
from tests.faults.proxy import Fault, FaultProxy, FaultSchedule
from tests.faults.runs import AtThePeer, compare, publish_under_faults, published

__all__ = ["arm_tls"]
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("azure", "azure-mcs")
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]
#: seeds whose schedule injects at least one fault in a publish (seed 5 injects none)
SEEDS = (1, 2, 3, 4, 6, 7)


@dataclasses.dataclass
class Peers:
    double: ArmDouble
    arm: FaultProxy
    storage: FaultProxy

    @property
    def proxies(self) -> list[FaultProxy]:
        return [self.arm, self.storage]


def proxy_tls(tls: Tls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.cert.configure_cert(ctx)  # the double's own certificate: what the adapter pins
    return ctx


@pytest.fixture
async def peers(request: pytest.FixtureRequest, arm_tls: Tls, azurite: Azurite,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Peers]:
    callspec = getattr(request.node, "callspec", None)
    seed = callspec.params.get("seed", 0) if callspec is not None else 0
    monkeypatch.setenv(SECRET_ENV, SECRET)
    storage = FaultProxy(azurite.endpoint, FaultSchedule(seed=seed, rate=0.2),
                         client_max_size=8 << 20)
    await storage.start()
    blobs = Blobs(azurite.account_url, ACCOUNT, KEY, container=f"disks{secrets.token_hex(4)}",
                  sas_account_url=f"{storage.url}/{ACCOUNT}")
    double = make_double(blobs)
    runner = await serve(double, arm_tls)
    arm = FaultProxy(double.base_url, FaultSchedule(seed=seed + 1000, rate=0.2),
                     tls=proxy_tls(arm_tls))
    await arm.start()
    try:
        yield Peers(double, arm, storage)
    finally:
        await arm.stop()
        await storage.stop()
        await runner.cleanup()


async def leftovers(peers: Peers) -> list[str]:
    """Everything the double and Azurite hold (the double and the blob container are the
    test's own): disks, images, gallery definitions and versions and VMs by their ARM id, and
    every blob of the container."""
    from azure.storage.blob.aio import ContainerClient

    double = peers.double
    found = [f"{kind} {resource['id'].lower()}" for kind, store in (
        ("disk", double.disks), ("image", double.images), ("definition", double.definitions),
        ("version", double.versions), ("vm", double.vms)) for resource in store.values()]
    assert double.blobs is not None
    async with ContainerClient(azurite_url(double), double.blobs.container, credential={
            "account_name": ACCOUNT, "account_key": KEY}) as container:
        if await container.exists():
            found += [f"blob {blob.name}" async for blob in container.list_blobs()]
    return found


def kept(ctx: PublishContext, config: AzureConfig, found: list[str], *, succeeded: bool
         ) -> list[str]:
    """What the record says Azure holds after the run: after a success the published image or
    image version (the upload disk only fed it); and, for azure-mcs, the connector's gallery
    definition once it exists: ensured (made when missing) for every version and kept by
    design, failure or not, whether this task made it or its answer was lost."""
    out: list[str] = []
    if isinstance(config, McsConfig):
        definition = (f"definition /subscriptions/{config.subscription_id}/resourcegroups/"
                      f"{config.resource_group}/providers/microsoft.compute/galleries/"
                      f"{config.gallery}/images/{config.image_definition}").lower()
        made = [f"definition {d.id.lower()}" for d in ctx.resources
                if isinstance(d, AzureDefinitionCreated)]
        assert set(made) <= {definition}, made
        out += [definition] if definition in found else []
    if succeeded:
        result = published(ctx, AzurePublished)
        out.append(f"{'image' if result.what == 'image' else 'version'} {result.id.lower()}")
    return out


def azurite_url(double: ArmDouble) -> str:
    assert double.blobs is not None
    return double.blobs.account_url



def check_azure_error(error: str) -> None:
    assert error.startswith("Azure"), error


@pytest.mark.parametrize("kind", ["azure", "azure-mcs"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        peers: Peers, arm_tls: Tls, tmp_path: Path, seed: int, kind: str) -> None:
    name = f"faults-{kind}-{seed}"
    settings = clients(peers.double, arm_tls, blob=BlobOptions(retry=FAST))
    cfg = config(peers.double, kind, arm_endpoint=peers.arm.url)
    adapter = create(cfg, settings)
    ctx = context(vhd(tmp_path / "disk.vhd"), name)
    error = await publish_under_faults(adapter, ctx, lambda: [proxy.heal() for proxy in peers.proxies],
                                       check_azure_error)
    found = await leftovers(peers)
    left = compare(found, kept(ctx, cfg, found, succeeded=error is None))
    record(fault_run(kind, seed, peers.proxies, error=error, orphans=left.orphans))
    assert sum(p.total_injected for p in peers.proxies) > 0
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not at Azure"
    assert left.orphans == [], (f"seed {seed} ({error}) left {left.orphans}; faults "
                                f"{[i for p in peers.proxies for i in p.injections]}")


async def test_a_changed_arm_certificate_is_refused_naming_it(
        peers: Peers, arm_tls: Tls, tmp_path: Path) -> None:
    peers.arm.heal()
    peers.storage.heal()
    other = trustme.CA().issue_cert("127.0.0.1")
    changed = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.configure_cert(changed)
    peers.arm.change_certificate(changed)
    adapter = create(config(peers.double, arm_endpoint=peers.arm.url),
                     clients(peers.double, arm_tls))
    try:
        with pytest.raises(AdapterError) as refused:
            await publish(adapter, context(vhd(tmp_path / "disk.vhd"), "cert-change"))
    finally:
        await adapter.close()
    assert str(refused.value) == (
        "Azure: creating the upload disk cert-change-upload: the server's TLS certificate is not "
        "trusted (unable to get local issuer certificate): an intercepting proxy, or its CA is "
        "missing from this host's trust store")
    assert not refused.value.retryable
    assert peers.arm.forwarded == 0 and peers.double.disks == {}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("kind", ["azure", "azure-mcs"])
async def test_an_answer_cut_short_on_the_staging_disk_is_retried(
        peers: Peers, arm_tls: Tls, tmp_path: Path, kind: str, method: str) -> None:
    """A read or delete of the upload disk whose answer is cut short is sent again (both are
    safe to repeat), not given up: the cleanup after a success then left the disk (and its
    blob) behind, billed."""
    peers.storage.heal()
    first = iter([True])
    peers.arm.schedule = FaultSchedule(
        seed=1, rate=1.0, menu=(Fault.TRUNCATED,),
        applies=lambda verb, path: verb == method and "/disks/" in path and next(first, False))
    cfg = config(peers.double, kind, arm_endpoint=peers.arm.url)
    adapter = create(cfg, clients(peers.double, arm_tls, blob=BlobOptions(retry=FAST)))
    ctx = context(vhd(tmp_path / "disk.vhd"), f"cut-{method.lower()}-{kind}")
    assert await publish_under_faults(adapter, ctx, peers.arm.heal, check_azure_error) is None
    assert (peers.arm.total_injected, peers.arm.retried) == (1, 1)
    found = await leftovers(peers)
    left = compare(found, kept(ctx, cfg, found, succeeded=True))
    assert left == AtThePeer(orphans=[], missing=[])
