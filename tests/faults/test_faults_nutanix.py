"""Nutanix (Prism Central v3 over HTTPS) through the fault proxy: the proxy terminates TLS with a
certificate of the Prism double's CA (what the connector pins) in front of the double, at a 20 %
fault rate. A publish either succeeds or fails with Prism's message, and after the runner's
cleanup the double holds no image, no VM and no unfinished task of the publish; a Prism whose
certificate changes under the pinned CA is refused."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from adapters.base import AdapterError, PublishContext, publish
from adapters.nutanix import Clients
from adapters.nutanix.nutanix_resources import NutanixPublished
from adapters.retry import RetryPolicy
from tests.faults.figures import fault_run, record
from tests.faults.proxy import Fault, FaultProxy, FaultSchedule
from tests.faults.runs import AtThePeer, compare, publish_under_faults, published
from tests.nutanix.conftest import CLUSTER, SUBNET, context, make_adapter, prism, prism_ca, qcow2_disk
from tests.nutanix.prism_double import PrismDouble

__all__ = ["prism", "prism_ca"]  # the Prism double's fixtures
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("nutanix",)
pytestmark = pytest.mark.timeout(120)
SEEDS = tuple(range(1, 9))
#: a call gives up after 1 s, before the proxy's 2 s stall ends
QUICK = Clients(task_poll=(0.01, 0.05), watch_poll=(0.02, 0.1), call_timeout=1.0,
                upload_idle_timeout=1.0, upload_chunk=1 << 18,
                retry=RetryPolicy(attempts=4, budget=30.0, first_delay=0.05, max_delay=0.2))


@dataclasses.dataclass
class Peer:
    double: PrismDouble
    proxy: FaultProxy
    ca_file: Path


def proxy_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
async def peer(request: pytest.FixtureRequest, prism: PrismDouble,
               prism_ca: tuple[trustme.CA, Path]) -> AsyncIterator[Peer]:
    callspec = getattr(request.node, "callspec", None)
    seed = callspec.params.get("seed", 0) if callspec is not None else 0
    async with FaultProxy(prism.url, FaultSchedule(seed=seed, rate=0.2), tls=proxy_tls(prism_ca[0]),
                          client_max_size=8 << 20) as proxy:
        yield Peer(prism, proxy, prism_ca[1])


def leftovers(double: PrismDouble, given: set[str]) -> list[str]:
    """What the double holds of the publish, read from its state (not through the proxy): every
    image, every VM but those set up before with each of its disks and NICs, and every
    unfinished task on an entity that still exists (Prism keeps its task history; a task of a
    deleted entity is moot, and the double moves a task on only when it is read)."""
    vms = {uuid: vm for uuid, vm in double.vms.items() if uuid not in given}
    alive = set(double.images) | set(vms)
    return ([f"image {uuid} {image['spec']['name']}" for uuid, image in double.images.items()]
            + [f"vm {uuid} {vm['spec']['name']}" for uuid, vm in vms.items()]
            + [f"disk of vm {uuid}: {disk['device_properties']['device_type']}"
               for uuid, vm in vms.items() for disk in vm["spec"]["resources"].get("disk_list") or []]
            + [f"nic of vm {uuid} on subnet {nic['subnet_reference']['uuid']}"
               for uuid, vm in vms.items() for nic in vm["spec"]["resources"].get("nic_list") or []]
            + [f"task {t.uuid} {t.operation} {t.status}" for t in double.tasks.values()
               if t.status in ("QUEUED", "RUNNING") and t.entity[1] in alive])


def kept(ctx: PublishContext, double: PrismDouble) -> list[str]:
    """What a successful publish's record says Prism holds: the published VM with one disk and
    one NIC on the connector's subnet (the staging image is gone once the disk is cloned)."""
    vm = published(ctx, NutanixPublished)
    [subnet] = [uuid for uuid, name in double.subnets.items() if name == SUBNET]
    return [f"vm {vm.uuid} {vm.name}", f"disk of vm {vm.uuid}: DISK",
            f"nic of vm {vm.uuid} on subnet {subnet}"]


def check_nutanix_error(error: str) -> None:
    assert error.startswith("Nutanix"), error


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        peer: Peer, tmp_path: Path, seed: int) -> None:
    name = f"faults-nutanix-{seed}"
    given = set(peer.double.vms)
    adapter = make_adapter(peer.double, peer.ca_file, QUICK, prism_url=peer.proxy.url)
    ctx = context(qcow2_disk(tmp_path / "disk.qcow2"), name)
    error = await publish_under_faults(adapter, ctx, peer.proxy.heal, check_nutanix_error)
    left = compare(leftovers(peer.double, given), kept(ctx, peer.double) if error is None else [])
    record(fault_run("nutanix", seed, [peer.proxy], error=error, orphans=left.orphans))
    assert peer.proxy.total_injected > 0
    if error is None:
        vm = peer.double.vms[published(ctx, NutanixPublished).uuid]
        assert (vm["spec"]["name"], vm["status"]["resources"]["power_state"]) == (name, "OFF")
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not at Prism"
    assert left.orphans == [], (f"seed {seed} ({error}) left {left.orphans}; faults "
                                f"{peer.proxy.injections}")


async def test_the_check_after_a_success_counts_a_second_disk_on_the_vm(
        peer: Peer, tmp_path: Path) -> None:
    peer.proxy.heal()
    given = set(peer.double.vms)
    adapter = make_adapter(peer.double, peer.ca_file, QUICK, prism_url=peer.proxy.url)
    ctx = context(qcow2_disk(tmp_path / "disk.qcow2"), "exact")
    assert await publish_under_faults(adapter, ctx, peer.proxy.heal, check_nutanix_error) is None
    expected = kept(ctx, peer.double)
    assert compare(leftovers(peer.double, given), expected) == AtThePeer(orphans=[], missing=[])
    vm = published(ctx, NutanixPublished).uuid
    disks = peer.double.vms[vm]["spec"]["resources"]["disk_list"]
    disks.append(dict(disks[0]))
    assert compare(leftovers(peer.double, given), expected).orphans == [f"disk of vm {vm}: DISK"]


async def test_a_changed_prism_certificate_is_refused_naming_it(peer: Peer, tmp_path: Path) -> None:
    peer.proxy.heal()
    peer.proxy.change_certificate(proxy_tls(trustme.CA()))
    adapter = make_adapter(peer.double, peer.ca_file, QUICK, prism_url=peer.proxy.url)
    try:
        with pytest.raises(AdapterError) as refused:
            await publish(adapter, context(qcow2_disk(tmp_path / "disk.qcow2"), "cert-change"))
    finally:
        await adapter.close()
    assert str(refused.value) == (
        "Nutanix Prism: looking up cluster 'ahv-1': the server's TLS certificate is not trusted "
        "(unable to get local issuer certificate): an intercepting proxy, or its CA is missing "
        "from this host's trust store (ca_file)")
    assert not refused.value.retryable
    assert peer.proxy.forwarded == 0 and peer.double.images == {}


async def test_an_answer_cut_short_is_retried_not_a_raw_aiohttp_error(peer: Peer) -> None:
    first = iter([True])
    peer.proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.TRUNCATED,),
                                        applies=lambda method, path: next(first, False))
    adapter = make_adapter(peer.double, peer.ca_file, QUICK, prism_url=peer.proxy.url)
    try:
        [cluster] = await adapter.prism.find("cluster", "name", CLUSTER)
    finally:
        await adapter.close()
    assert (cluster["spec"]["name"], peer.proxy.total_injected, peer.proxy.retried) == (CLUSTER, 1, 1)


@pytest.mark.parametrize("fault", [Fault.THROTTLED, Fault.STATUS_503])
async def test_a_create_refused_unread_is_sent_again(peer: Peer, tmp_path: Path, fault: Fault) -> None:
    first = iter([True])
    peer.proxy.schedule = FaultSchedule(
        seed=1, rate=1.0, menu=(fault,),
        applies=lambda method, path: method == "POST" and path.endswith("/images") and next(first, False))
    adapter = make_adapter(peer.double, peer.ca_file, QUICK, prism_url=peer.proxy.url)
    try:
        await publish(adapter, context(qcow2_disk(tmp_path / "disk.qcow2"), "refused-once"))
    finally:
        await adapter.close()
    assert (peer.proxy.total_injected, peer.proxy.retried) == (1, 1)
    assert [vm["spec"]["name"] for vm in peer.double.vms.values()] == ["refused-once"]
