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
from adapters.base import AdapterError, PublishContext, publish
from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.vsphere import Clients, VSpherePublished
from tests.faults.figures import fault_run, record
from tests.faults.proxy import FaultProxy, FaultSchedule
from tests.faults.runs import compare, publish_under_faults, published
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
#: the files of an imported VM in its folder in vcsim (``{name}``: the VM's): its one disk
#: (descriptor and data), configuration, NVRAM and log
VM_FILES = ("disk-0.vmdk", "disk-0-flat.vmdk", "{name}.vmx", "{name}.nvram", "vmware.log")
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


def inventory(sim: VcSim) -> list[str]:
    """vcsim's VMs, each virtual disk as the VM it belongs to and its file, and every file of
    every datastore (each a local folder there), relative to its datastore."""
    from pyVmomi import vim

    si = sim.si()
    found: list[str] = []
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        for vm in view.view:
            found.append(f"VM {vm._moId} {vm.name}")
            found += [f"disk of VM {vm._moId}" for device in vm.config.hardware.device
                      if isinstance(device, vim.vm.device.VirtualDisk)]
    finally:
        view.DestroyView()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.Datastore], True)
    try:
        roots = [(ds.name, Path(ds.info.url)) for ds in view.view]
    finally:
        view.DestroyView()
    for name, root in roots:
        if root.is_dir():
            found += [f"file [{name}] {p.relative_to(root)}" for p in root.rglob("*") if p.is_file()]
    return found


def kept(ctx: PublishContext, datastore: str) -> list[str]:
    """What a successful publish's record says vcsim holds: the published VM with its one
    disk, and that VM's files in its folder of the connector's datastore."""
    vm = published(ctx, VSpherePublished)
    return [f"VM {vm.moref} {vm.name}", f"disk of VM {vm.moref}",
            *(f"file [{datastore}] {vm.name}/{file.format(name=vm.name)}" for file in VM_FILES)]


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
    before = inventory(vcsim)
    async with FaultProxy(vcsim.url.split("/sdk")[0], schedule, tls=proxy_tls) as proxy:
        adapter = adapter_through(proxy, vcsim, importing, insecure=True)
        ctx = Recorder().context(small_disk, name)
        error = await publish_under_faults(adapter, ctx, proxy.heal, check_vsphere_error)
    left = compare([line for line in inventory(vcsim) if line not in before],
                   kept(ctx, adapter.config.datastore) if error is None else [])
    record(fault_run(f"vsphere ({phase})", seed, [proxy], error=error, orphans=left.orphans))
    assert proxy.total_injected > 0
    if error is None:
        assert [vm.name for vm in find_vms(vcsim, name)] == [name]
    assert left.missing == [], f"seed {seed}: the recorded {left.missing} are not in vcsim"
    assert left.orphans == [], f"seed {seed} ({error}) left {left.orphans}; faults {proxy.injections}"


def check_vsphere_error(error: str) -> None:
    assert error.startswith("vSphere: "), error


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
