"""XenServer (XenAPI XML-RPC and the disk's HTTP import) through the fault proxy: the XenAPI
double speaks plain HTTP, so the proxy terminates TLS with a certificate of a CA the connector
pins (ca_file), as a pool coordinator's HTTPS does, at a 20 % fault rate on the XML-RPC calls
and the ``PUT /import_raw_vdi`` alike. A publish either succeeds or fails with XenServer's
message, and after the runner's cleanup the double holds no VM, VDI, VBD, VIF or task of it; a
coordinator whose certificate changes under the pinned CA is refused."""

from __future__ import annotations

import asyncio
import gc
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters.base import AdapterError, PublishContext, RefusedError, publish
from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.xenserver import Adapter, Clients
from adapters.xenserver.xen_resources import XenPublished, XenVdi
from adapters.xenserver.xen_watch import watching
from tests.faults.figures import fault_run, record
from tests.faults.proxy import Fault, FaultProxy, FaultSchedule
from tests.faults.runs import AtThePeer, compare, publish_under_faults, published, recorded
from tests.xenserver.conftest import dynamic_vhd, make_adapter, xapi, xen_config, xen_env
from tests.xenserver.xapi_double import XapiDouble

__all__ = ["xapi", "xen_env"]  # the XenAPI double's fixtures
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("xenserver",)
pytestmark = pytest.mark.timeout(120)
SEEDS = tuple(range(1, 9))
QUICK = RetryPolicy(attempts=4, budget=30.0, first_delay=0.05, max_delay=0.2)


def quick_clients() -> Clients:
    """A call gives up after 1 s (before the proxy's 2 s stall ends); short retries; a pool of
    the test's own (a session of another test, another proxy, is never shared)."""
    return Clients(timeout=1.0, event_wait=0.5, task_poll=(0.05, 0.2), sessions=SessionPool(),
                   upload_retry=QUICK, read_retry=QUICK)


@dataclass
class Peer:
    double: XapiDouble
    proxy: FaultProxy
    ca_file: Path

    def adapter(self) -> Adapter:
        return make_adapter(xen_config(self.double, host=self.proxy.url, ca_file=str(self.ca_file)),
                            quick_clients())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[trustme.CA, Path]]:
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("xen-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    yield authority, pem


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
async def peer(request: pytest.FixtureRequest, xapi: XapiDouble, xen_env: None,
               ca: tuple[trustme.CA, Path]) -> AsyncIterator[Peer]:
    callspec = getattr(request.node, "callspec", None)
    seed = callspec.params.get("seed", 0) if callspec is not None else 0
    # each try of the disk import makes a task of its own (and a new log-in, a session)
    async with FaultProxy(xapi.url, FaultSchedule(seed=seed, rate=0.2), tls=server_tls(ca[0]),
                          client_max_size=64 << 20, per_attempt=("task_id", "session_id")) as proxy:
        yield Peer(xapi, proxy, ca[1])


def context(vhd: tuple[Path, int], name: str) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        pass

    return PublishContext(task_id="t0fa017c", template="win10", image_name=name, artifact=vhd[0],
                          artifact_format="vhd-dynamic", virtual_size=vhd[1], progress=progress)


def leftovers(double: XapiDouble) -> list[str]:
    """Everything the double holds that was made through the API (read from its state, not
    through the proxy): VMs, VDIs, each VBD as the VM and VDI it joins, each VIF as its VM and
    network, and every task."""
    state = double.state
    with double.lock:
        def uuid(table: dict[str, dict[str, Any]], ref: str) -> str:
            return str(table[ref]["uuid"]) if ref in table else f"gone {ref}"

        return ([f"vm {v['uuid']}" for r, v in state.vms.items() if r not in double.given]
                + [f"vdi {v['uuid']}" for r, v in state.vdis.items() if r not in double.given]
                + [f"vbd {uuid(state.vms, b['VM'])} {b['userdevice']} -> vdi {uuid(state.vdis, b['VDI'])}"
                   for r, b in state.vbds.items() if r not in double.given]
                + [f"vif {uuid(state.vms, v['VM'])} on {state.networks[v['network']]['name_label']}"
                   for v in state.vifs.values()]
                + [f"task {ref} {t.get('name_label', '')} {t.get('status', '')}"
                   for ref, t in state.tasks.items()])


def kept(ctx: PublishContext, network: str) -> list[str]:
    """What a successful publish's record says the pool holds: the published VM, the uploaded
    disk it recorded, the one VBD joining them at userdevice 0 and the one VIF on ``network``."""
    vm = published(ctx, XenPublished).uuid
    vdi = recorded(ctx, XenVdi).uuid
    return [f"vm {vm}", f"vdi {vdi}", f"vbd {vm} 0 -> vdi {vdi}", f"vif {vm} on {network}"]


def check_xenserver_error(error: str) -> None:
    assert error.startswith(("XenServer", "Citrix Hypervisor")), error


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        peer: Peer, tmp_path: Path, seed: int) -> None:
    name = f"faults-xen-{seed}"
    adapter = peer.adapter()
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"), name)
    error = await publish_under_faults(adapter, ctx, peer.proxy.heal, check_xenserver_error)
    left = compare(leftovers(peer.double),
                   kept(ctx, adapter.config.network) if error is None else [])
    record(fault_run("xenserver", seed, [peer.proxy], error=error, orphans=left.orphans))
    assert peer.proxy.total_injected > 0
    if error is None:
        found = peer.double.vm_by_name(name)
        assert found is not None and found[1]["power_state"] == "Halted"
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not in the pool"
    assert left.orphans == [], (f"seed {seed} ({error}) left {left.orphans}; faults "
                                f"{peer.proxy.injections}")


async def test_the_check_after_a_success_counts_what_the_record_does_not_name(
        peer: Peer, tmp_path: Path) -> None:
    """Without faults the pool holds exactly the recorded result; a second disk attached to
    the published VM (found by walking out from it, it would look like part of it) is an
    orphan."""
    peer.proxy.heal()
    adapter = peer.adapter()
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"), "exact")
    assert await publish_under_faults(adapter, ctx, peer.proxy.heal, check_xenserver_error) is None
    expected = kept(ctx, adapter.config.network)
    assert compare(leftovers(peer.double), expected) == AtThePeer(orphans=[], missing=[])
    with peer.double.lock:
        vm = published(ctx, XenPublished).ref
        extra = peer.double.x_VDI_create({
            "name_label": "exact", "SR": next(iter(peer.double.state.srs)), "virtual_size": "1024",
            "type": "user", "sharable": False, "read_only": False, "other_config": {}})
        peer.double._new_vbd(vm, extra, "1")
        extra_uuid = peer.double.state.vdis[extra]["uuid"]
    vm_uuid = published(ctx, XenPublished).uuid
    assert compare(leftovers(peer.double), expected).orphans == sorted(
        [f"vbd {vm_uuid} 1 -> vdi {extra_uuid}", f"vdi {extra_uuid}"])


async def test_a_changed_certificate_is_refused_naming_it(peer: Peer, tmp_path: Path) -> None:
    peer.proxy.heal()
    peer.proxy.change_certificate(server_tls(trustme.CA()))
    adapter = peer.adapter()
    try:
        with pytest.raises(AdapterError) as refused:
            await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd"), "cert-change"))
    finally:
        await adapter.close()
    assert str(refused.value) == (
        f"XenServer {peer.proxy.url}: logging in: the server's TLS certificate is not trusted "
        "(unable to get local issuer certificate): an intercepting proxy, or its CA is missing "
        "from this host's trust store (ca_file)")
    assert not refused.value.retryable
    assert peer.proxy.forwarded == 0 and leftovers(peer.double) == []


class FirstOf:
    """A schedule's ``applies``: only the first request of ``method`` (and ``path``, if given)."""

    def __init__(self, method: str, path: str | None = None) -> None:
        self.method, self.path, self.done = method, path, False

    def __call__(self, method: str, path: str) -> bool:
        if self.done or method != self.method or self.path not in (None, path):
            return False
        self.done = True
        return True


def only(proxy: FaultProxy, fault: Fault, applies: FirstOf) -> None:
    proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(fault,), applies=applies)


@pytest.mark.parametrize("fault", [Fault.THROTTLED_RETRY_AFTER, Fault.STATUS_502, Fault.TRUNCATED,
                                   Fault.RESET_MID_BODY])
async def test_a_transient_xml_rpc_fault_on_a_read_is_retried(peer: Peer, fault: Fault) -> None:
    only(peer.proxy, fault, FirstOf("POST"))  # the log-in, under the first read
    adapter = peer.adapter()
    try:
        sr = await adapter._one("SR", "Local storage", "sr")
    finally:
        await adapter.close()
    assert sr in peer.double.state.srs
    assert (peer.proxy.total_injected, peer.proxy.retried) == (1, 1)


async def test_an_http_500_is_reported_by_status_and_not_retried(peer: Peer) -> None:
    only(peer.proxy, Fault.STATUS_500, FirstOf("POST"))
    adapter = peer.adapter()
    try:
        with pytest.raises(AdapterError) as failed:
            await adapter._one("SR", "Local storage", "sr")
    finally:
        await adapter.close()
    assert str(failed.value) == (f"XenServer {peer.proxy.url}: logging in: HTTP 500 Internal "
                                 "Server Error")
    assert not failed.value.retryable and peer.proxy.retried == 0


async def test_a_failed_log_in_closes_its_connection(peer: Peer, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    only(peer.proxy, Fault.STATUS_500, FirstOf("POST"))
    adapter = peer.adapter()
    try:
        await adapter._one("SR", "Local storage", "sr")
    except AdapterError:
        pass
    finally:
        await adapter.close()
    gc.collect()
    assert [str(u.exc_value) for u in unraisable] == []


async def test_an_import_answered_503_is_sent_again(peer: Peer, tmp_path: Path) -> None:
    only(peer.proxy, Fault.STATUS_503, FirstOf("PUT", "/import_raw_vdi"))
    adapter = peer.adapter()
    try:
        await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd"), "import-503"))
    finally:
        await adapter.close()
    assert (peer.proxy.total_injected, peer.proxy.retried) == (1, 1)
    assert [u.size for u in peer.double.state.uploads] == [(tmp_path / "disk.vhd").stat().st_size]
    assert peer.double.state.tasks == {}


async def test_a_create_refused_unread_is_sent_again_once(peer: Peer) -> None:
    creating = FirstOf("POST")
    creating.done = True  # no fault until the create
    only(peer.proxy, Fault.STATUS_503, creating)
    adapter = peer.adapter()
    try:
        sr = await adapter._one("SR", "Local storage", "sr")  # logged in
        creating.done = False  # the next XML-RPC request, VDI.create, is answered 503 unread
        record = {"name_label": "refused-once", "name_description": "", "SR": sr,
                  "virtual_size": str(8 << 20), "type": "user", "sharable": False,
                  "read_only": False, "other_config": {}}
        ref = await adapter.session.xapi("creating the disk", lambda x: x.VDI.create(record))
    finally:
        await adapter.close()
    assert (peer.proxy.total_injected, peer.proxy.retried) == (1, 1)
    assert [v["name_label"] for v in peer.double.state.vdis.values()] == ["refused-once"]
    assert ref in peer.double.state.vdis


def disk_record(sr: str, name: str) -> dict[str, Any]:
    return {"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(8 << 20),
            "type": "user", "sharable": False, "read_only": False, "other_config": {}}


async def logged_in(peer: Peer, adapter: Adapter) -> str:
    """The SR's ref, read with no fault (the session logged in); the schedule's faults apply
    to the requests after it."""
    enabled, peer.proxy.schedule.enabled = peer.proxy.schedule.enabled, False
    sr = await adapter._one("SR", "Local storage", "sr")
    peer.proxy.schedule.enabled = enabled
    return sr


async def test_a_create_whose_connection_closes_unanswered_is_sent_once_and_fails_clearly(
        peer: Peer) -> None:
    only(peer.proxy, Fault.UNANSWERED, FirstOf("POST"))
    adapter = peer.adapter()
    try:
        sr = await logged_in(peer, adapter)
        requests = peer.proxy.requests
        with pytest.raises(AdapterError) as failed:
            await adapter.session.xapi("creating the disk",
                                       lambda x: x.VDI.create(disk_record(sr, "unanswered")))
        sent = peer.proxy.requests - requests
    finally:
        await adapter.close()  # its log-out is one more request
    # xmlrpc.client's Transport.request sent it again on the same "Remote end closed" and the
    # call succeeded: two disks, one of them nobody knew about
    assert [v["name_label"] for v in peer.double.state.vdis.values()] == ["unanswered"]
    assert sent == 1 and peer.proxy.total_injected == 1
    assert str(failed.value) == (
        f"XenServer {peer.proxy.url}: creating the disk: connection failed: Remote end closed "
        "connection without response; not sent again: xapi may have acted on it")


async def test_a_create_on_a_kept_alive_connection_the_server_closed_is_sent_once(
        xapi: XapiDouble, xen_env: None, ca: tuple[trustme.CA, Path]) -> None:
    async with FaultProxy(xapi.url, FaultSchedule(seed=1, rate=0.0), tls=server_tls(ca[0]),
                          keepalive_seconds=0.2) as proxy:
        peer = Peer(xapi, proxy, ca[1])
        adapter = peer.adapter()
        try:
            sr = await logged_in(peer, adapter)
            await asyncio.sleep(0.6)  # the proxy closed the idle connection meanwhile
            ref = await adapter.session.xapi("creating the disk",
                                             lambda x: x.VDI.create(disk_record(sr, "idle")))
        finally:
            await adapter.close()
    assert [v["name_label"] for v in xapi.state.vdis.values()] == ["idle"]
    assert ref in xapi.state.vdis


@pytest.mark.parametrize("creating", [False, True])
async def test_a_call_answered_503_every_time_is_sent_exactly_the_policys_attempts(
        peer: Peer, creating: bool) -> None:
    peer.proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,))
    adapter = peer.adapter()
    try:
        with pytest.raises(RefusedError) as refused:
            if creating:
                sr = await logged_in(peer, adapter)
                await adapter.session.xapi("creating the disk",
                                           lambda x: x.VDI.create(disk_record(sr, "refused")))
            else:
                await adapter._one("SR", "Local storage", "sr")  # its log-in is refused
        refusals = peer.proxy.total_injected
    finally:
        await adapter.close()  # a session logged in logs out: one more request
    # the transport retried each request QUICK.attempts times and the session each call as
    # often again: 16 requests
    assert refusals == QUICK.attempts
    doing = "creating the disk" if creating else "logging in"
    assert str(refused.value) == f"XenServer {peer.proxy.url}: {doing}: HTTP 503 Service Unavailable"
    assert peer.double.state.vdis == {}


async def test_a_cancel_ends_the_wait_a_retry_after_asked_for_and_frees_the_session(
        peer: Peer) -> None:
    creating = FirstOf("POST")
    peer.proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.THROTTLED_RETRY_AFTER,),
                                        applies=creating, retry_after=2)
    adapter = peer.adapter()
    try:
        creating.done = True
        sr = await logged_in(peer, adapter)
        creating.done = False  # the create is answered 429, Retry-After: 2
        call = asyncio.ensure_future(adapter.session.xapi(
            "creating the disk", lambda x: x.VDI.create(disk_record(sr, "throttled"))))
        while peer.proxy.total_injected == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # the transport slept on its thread holding the session: this read waited for it,
        # then the create was sent after all
        await adapter._one("SR", "Local storage", "sr")
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(2.2)  # past the Retry-After: nothing is sent for the cancelled call
    finally:
        await adapter.close()
    assert peer.double.state.vdis == {}
    # the create was never sent again (the read after it is another request, which the
    # proxy's 'retried' counted before it compared requests)
    assert peer.proxy.total_injected == 1 and peer.proxy.retried == 0


class Nth:
    """A schedule's ``applies``: only the ``n``-th request from now (1: the next)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def __call__(self, method: str, path: str) -> bool:
        self.left -= 1
        return self.left == 0


async def test_a_call_run_again_after_a_refusal_does_not_send_its_answered_requests_again(
        peer: Peer) -> None:
    adapter = peer.adapter()
    try:
        sr = await logged_in(peer, adapter)
        peer.proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,),
                                            applies=Nth(3))  # the second disk's create

        def two_disks(x: Any) -> list[str]:
            first = x.VDI.create(disk_record(sr, "first"))
            return [first, x.VDI.get_name_label(first), x.VDI.create(disk_record(sr, "second"))]

        first, label, second = await adapter.session.xapi("creating two disks", two_disks)
    finally:
        await adapter.close()
    assert label == "first" and peer.proxy.total_injected == 1
    assert sorted(v["name_label"] for v in peer.double.state.vdis.values()) == ["first", "second"]
    assert {first, second} == set(peer.double.state.vdis)
    assert peer.proxy.requests == 2 + 4 + 1  # log-in and SR, 3 requests and the refused one again, log-out


async def test_a_log_in_cut_short_under_a_create_is_retried_as_a_read(peer: Peer) -> None:
    only(peer.proxy, Fault.UNANSWERED, FirstOf("POST"))  # the log-in, the session's first request
    sr = next(iter(peer.double.state.srs))
    adapter = peer.adapter()
    try:
        ref = await adapter.session.xapi("creating the disk",
                                         lambda x: x.VDI.create(disk_record(sr, "after-log-in")))
    finally:
        await adapter.close()
    assert [v["name_label"] for v in peer.double.state.vdis.values()] == ["after-log-in"]
    assert ref in peer.double.state.vdis and peer.proxy.retried == 1


async def test_the_event_watch_answered_503_every_time_makes_its_policys_attempts(
        peer: Peer) -> None:
    peer.proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,))
    adapter = peer.adapter()
    session = adapter._new_session()  # the watch's own: its log-in under event.from is refused
    retry = RetryPolicy(attempts=3, budget=30.0, first_delay=0.01, max_delay=0.05)
    try:
        async with watching(adapter._key, lambda: session, "OpaqueRef:vm", 0.5, retry) as reports:
            report = await asyncio.wait_for(reports.get(), 10)
        refusals = peer.proxy.total_injected
    finally:
        await session.close()
        await adapter.close()
    assert isinstance(report, RefusedError), report
    assert str(report).endswith("logging in: HTTP 503 Service Unavailable"), report
    # the transport sent each event.from QUICK.attempts times under the watch's 3: 12
    assert refusals == retry.attempts
