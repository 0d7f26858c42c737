"""Hyper-V under faults: the SMB copy goes to the real Samba peer through the TCP fault relay
(refused connections, resets mid-copy, stalls), PowerShell to the Hyper-V double through the
WinRM faults (tests/faults/winrm_faults.py), each at a 20 % rate. A publish either succeeds or
fails with a message naming the host or the share, and after the runner's cleanup the share
holds no file and the host no VM. A changed WinRM certificate is refused by pypsrp itself."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import pytest
import trustme
from aiohttp import web

from adapters import create
from adapters.base import PlatformError, PublishContext
from adapters.hyperv import Adapter
from adapters.hyperv import hyperv_scripts as scripts
from adapters.hyperv.hyperv_resources import HypervDisk, HypervPublished
from adapters.retry import RetryPolicy
from tests.faults.figures import Injector, fault_run, record
from tests.faults.proxy import FaultProxy, FaultSchedule
from tests.faults.runs import compare, publish_under_faults, published, recorded
from tests.faults.tcp_proxy import TcpFaultProxy, TcpSchedule
from tests.faults.winrm_faults import FaultyWinRM
from tests.hyperv.conftest import LOCAL_PATH, data_disk, hyperv_config, short_clients
from tests.hyperv.hyperv_double import HyperVDouble
from tests.hyperv.test_hyperv_publish import context
from tests.windows_remote.samba_peer import SambaPeer, samba, smb_env

__all__ = ["samba", "smb_env"]
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("hyperv",)
pytestmark = pytest.mark.timeout(120)
#: the first 20 seeds that inject a fault: a publish is one SMB connection and a few WinRM
#: calls, so at 20 % one seed in two injects none (a planned cut past a connection's end
#: never fires)
SEEDS = (1, 2, 8, 9, 15, 16, 17, 18, 19, 20, 21, 22, 26, 27, 28, 29, 31, 32, 34, 35)
#: SMB messages of a copy are up to a chunk (1 MiB here): a cut lands anywhere in a 6 MiB disk
CUT = (1 << 12, 6 << 20)
#: seconds the SMB copy waits for an answer (RemoteClients.timeout)
SMB_TIMEOUT = 1.5
#: long enough for Samba to drop the open handle of a connection that went silent
SMB_RETRY = RetryPolicy(attempts=5, budget=60.0, first_delay=1.0, max_delay=2.0)


@dataclass
class Peers:
    samba: SambaPeer
    host: HyperVDouble
    smb: TcpFaultProxy
    winrm: FaultyWinRM

    @property
    def injectors(self) -> list[Injector]:
        return [self.smb, self.winrm]

    def heal(self) -> None:
        self.smb.heal()
        self.winrm.heal()

    def leftovers(self) -> list[str]:
        """The share's files (its folder, not through SMB) and the host's VMs, each with the
        disk it is attached to."""
        return ([f"file {name}" for name in self.samba.files()]
                + [f"VM {vm['Name']} ({vm['VMId']}) on {vm['VHDPath']}" for vm in self.host.vms.values()])


def kept(ctx: PublishContext) -> list[str]:
    """What a successful publish's record says is left: its disk on the share and the
    published VM on that disk."""
    vm, disk = published(ctx, HypervPublished), recorded(ctx, HypervDisk)
    return [f"file {PureWindowsPath(disk.unc).name}", f"VM {vm.name} ({vm.vm_id}) on {disk.local_path}"]


@pytest.fixture
async def peers(request: pytest.FixtureRequest, smb_env: SambaPeer) -> AsyncIterator[Peers]:
    seed = request.node.callspec.params["seed"]
    host = HyperVDouble(LOCAL_PATH, smb_env.share_dir)
    winrm = FaultyWinRM(host, FaultSchedule(seed=seed + 1000, rate=0.2))
    # a stall outlasts the copy's timeout (SMB_TIMEOUT)
    async with TcpFaultProxy(smb_env.port, TcpSchedule(seed=seed, rate=0.2, cut_range=CUT),
                             stall_seconds=3.0) as smb:
        yield Peers(smb_env, host, smb, winrm)



def check_hyperv_error(error: str) -> None:
    assert "hv01.lab.example" in error or "127.0.0.1" in error, error
    assert "Error(" not in error and "Exception" not in error, error  # no raw class


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        peers: Peers, tmp_path: Path, seed: int) -> None:
    name = f"faults-hyperv-{seed}"
    disk = data_disk(tmp_path / "disk.vhdx", 6)
    clients = short_clients(peers.host)
    clients = type(clients)(**{**clients.__dict__, "connect": peers.winrm.connect,
                               "timeout": SMB_TIMEOUT, "smb_retry": SMB_RETRY})
    adapter = create(hyperv_config(peers.samba, smb_port=peers.smb.port,
                                   secure_boot="MicrosoftWindows"), clients)
    assert isinstance(adapter, Adapter)
    ctx = context(disk, name)
    error = await publish_under_faults(adapter, ctx, peers.heal, check_hyperv_error)
    left = compare(peers.leftovers(), kept(ctx) if error is None else [])
    record(fault_run("hyperv", seed, peers.injectors, error=error, orphans=left.orphans))
    assert peers.smb.connections > 0
    assert peers.smb.total_injected + peers.winrm.total_injected > 0, "no fault was injected"
    if error is None:
        assert (peers.samba.share_dir / f"{name}.vhdx").read_bytes() == disk.read_bytes()
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not there"
    assert left.orphans == [], (f"seed {seed} ({error}) left {left.orphans}; faults "
                                f"{peers.smb.counts()} {peers.winrm.injections}")


def test_the_runs_inject_faults_of_every_kind() -> None:
    """Over the seeds, both the SMB relay and WinRM draw faults (the rate is not silently 0)."""
    schedules = [TcpSchedule(seed=seed, rate=0.2, cut_range=CUT) for seed in SEEDS]
    drawn = [schedule.draw() for schedule in schedules for _ in range(10)]
    assert {p.fault for p in drawn if p is not None} == {*TcpSchedule(seed=0, rate=0).menu}


# ---------------------------------------------------------------- the certificate change
@pytest.fixture
async def wsman() -> AsyncIterator[str]:
    """The upstream behind the TLS proxy (a refused handshake never reaches it)."""
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="not a WinRM server")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def handshake(port: int, ca_file: Path) -> None:
    """A TLS handshake with 127.0.0.1:``port`` verified against ``ca_file``."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(ca_file)))
    writer.close()
    await writer.wait_closed()


async def test_a_changed_winrm_certificate_is_refused_clearly(
        smb_env: SambaPeer, wsman: str, tmp_path: Path) -> None:
    """pypsrp over HTTPS through the proxy, the connector pinned to the lab's CA (ca_file):
    after the certificate changed (another CA), the login is refused with a message naming the
    check and the setting, never retried, and nothing reaches the host."""
    lab, intruder = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "lab-ca.pem"
    lab.cert_pem.write_to_path(str(ca_file))
    async with FaultProxy(wsman, FaultSchedule(seed=1, rate=0.0), tls=server_context(lab)) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        cfg = hyperv_config(smb_env, host="127.0.0.1", winrm_port=port, ca_file=str(ca_file))
        clients = type(short_clients(HyperVDouble(LOCAL_PATH, smb_env.share_dir)))(timeout=5)
        adapter = create(cfg, clients)
        assert isinstance(adapter, Adapter)
        try:
            await handshake(port, ca_file)  # the lab's certificate passes the check pypsrp makes
            proxy.change_certificate(server_context(intruder))
            with pytest.raises(PlatformError, match="certificate could not be verified") as after:
                await adapter.session.run(scripts.vm_states(["x"], ["y"]))
            assert not after.value.retryable and "ca_file" in str(after.value)
            assert proxy.forwarded == 0
        finally:
            await adapter.close()

