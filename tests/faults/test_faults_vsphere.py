"""vSphere through the fault proxy: vcsim's SOAP API and its NFC upload both behind a proxy that
terminates TLS, at a 20 % fault rate. A publish either succeeds or fails with vSphere's message,
and after the runner's cleanup vcsim holds no VM and no datastore file of the task; a vCenter
whose certificate changes under a pinned CA is refused."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from adapters import config_model, create
from adapters.base import AdapterError, publish
from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.vsphere import Clients
from tests.faults.figures import fault_run, record
from tests.faults.proxy import FaultProxy, FaultSchedule
from tests.vsphere.conftest import (
    Recorder,
    VcSim,
    connector,
    find_vms,
    make_raw_disk,
    vc_env,
    vcsim,
    vcsim_binary,
)

__all__ = ["vc_env", "vcsim", "vcsim_binary"]  # the vcsim fixtures
#: connector types these runs publish to (tests/faults/test_fault_coverage.py)
COVERS = ("vsphere",)
pytestmark = pytest.mark.timeout(120)
SEEDS = (1, 2, 3, 4, 5, 6)
QUICK = RetryPolicy(attempts=4, budget=30.0, first_delay=0.05, max_delay=0.2)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


class ImportPhase:
    """A schedule's ``applies``: true from the first ImportVApp call on (the import lease, the
    NFC upload, completing it and the cleanup), so faults hit what creates objects."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, method: str, path: str) -> bool:
        return self.started


def through(proxy: FaultProxy, sim: VcSim, phase: ImportPhase | None = None) -> Any:
    """vcsim's SOAP with every URL of vcsim in its answers rewritten to the proxy (the NFC
    device URLs of import leases); ``phase`` is told when the import starts."""
    from adapters.vsphere.session import soap_stub

    here, there = f"{sim.host}:{sim.port}", proxy.url.removeprefix("https://")

    def connect(host: str, port: int, ssl_ctx: Any, timeout: float) -> Any:
        stub = soap_stub(host, port, ssl_ctx, timeout)
        invoke = stub.InvokeMethod

        def rewriting(mo: Any, info: Any, args: Any) -> Any:
            if phase is not None and info.name == "ImportVApp":
                phase.started = True
            result = invoke(mo, info, args)
            if info.name == "RetrievePropertiesEx" and result is not None:
                for item in result.objects:
                    for value in item.propSet:
                        for device in getattr(value.val, "deviceUrl", None) or []:
                            device.url = device.url.replace(here, there)
            return result

        stub.InvokeMethod = rewriting
        return stub

    return connect


def adapter_through(proxy: FaultProxy, sim: VcSim, phase: ImportPhase | None = None,
                    **overrides: Any) -> Any:
    port = int(proxy.url.rpartition(":")[2])
    cfg = config_model("vsphere").model_validate(connector(sim, host="127.0.0.1", port=port,
                                                           **overrides))
    # a pool of its own: a session of another test (another proxy) is never shared
    return create(cfg, Clients(connect=through(proxy, sim, phase), wait_seconds=1,
                               sessions=SessionPool(), read_retry=QUICK, import_retry=QUICK))


def leftovers(sim: VcSim, name: str) -> list[str]:
    """The task's VMs and datastore files in vcsim (each datastore is a local folder there)."""
    from pyVmomi import vim

    found = [f"VM {vm._moId} {vm.name}" for vm in find_vms(sim, name)]
    si = sim.si()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.Datastore], True)
    try:
        roots = [Path(ds.info.url) for ds in view.view]
    finally:
        view.DestroyView()
    for root in roots:
        if root.is_dir():
            found += [f"file {p}" for p in root.rglob(f"*{name}*")]
    return found


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    return make_raw_disk(tmp_path / "disk.img", size_mib=24)


@pytest.fixture
async def proxy_tls(ca: trustme.CA) -> AsyncIterator[ssl.SSLContext]:
    yield server_tls(ca)


#: every request, or (a placement lookup is a dozen SOAP requests retried as one call, so at
#: 20 % it rarely gets further) only those from the import on
@pytest.mark.parametrize("phase", ["all", "import"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_publish_under_faults_succeeds_or_leaves_nothing(
        vcsim: VcSim, vc_env: None, small_disk: Path, proxy_tls: ssl.SSLContext, seed: int,
        phase: str) -> None:
    name = f"faults-{phase}-{seed}"
    importing = ImportPhase() if phase == "import" else None
    schedule = FaultSchedule(seed=seed, rate=0.2, applies=importing or (lambda method, path: True))
    async with FaultProxy(vcsim.url.split("/sdk")[0], schedule, tls=proxy_tls) as proxy:
        adapter = adapter_through(proxy, vcsim, importing, insecure=True)
        rec = Recorder()
        error: str | None = None
        try:
            await publish(adapter, rec.context(small_disk, name))
        except AdapterError as exc:
            error = str(exc)
        proxy.heal()
        if error is not None:
            assert error.startswith("vSphere: "), error
            await rec.cleanup(adapter)  # what the runner does after a failure
        await adapter.close()
    orphans = [] if error is None else leftovers(vcsim, name)
    record(fault_run(f"vsphere ({phase})", seed, [proxy], error=error, orphans=orphans))
    assert proxy.total_injected > 0
    if error is None:
        assert [vm.name for vm in find_vms(vcsim, name)] == [name]
    assert orphans == [], f"seed {seed} ({error}) left {orphans}; faults {proxy.injections}"


async def test_a_changed_certificate_is_refused_naming_it(
        vcsim: VcSim, vc_env: None, small_disk: Path, ca: trustme.CA, tmp_path: Path) -> None:
    pinned = tmp_path / "vcenter-ca.pem"
    ca.cert_pem.write_to_path(str(pinned))
    async with FaultProxy(vcsim.url.split("/sdk")[0], FaultSchedule(seed=1, rate=0.0),
                          tls=server_tls(ca)) as proxy:
        adapter = adapter_through(proxy, vcsim, insecure=False, ca_file=str(pinned))
        rec = Recorder()
        proxy.change_certificate(server_tls(trustme.CA()))
        with pytest.raises(AdapterError) as refused:
            await publish(adapter, rec.context(small_disk, "cert-change"))
        await adapter.close()
    assert "the server's TLS certificate is not trusted (unable to get local issuer certificate)" \
        in str(refused.value)
    assert proxy.forwarded == 0 and find_vms(vcsim, "cert-change") == []
