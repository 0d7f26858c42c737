"""Failures against vcsim: credentials, missing objects, session loss, cancel, timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters import config_model, create
from adapters.base import (
    AuthError,
    GuestTimeoutError,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    publish,
)
from adapters.vsphere import Clients, VSphereImport, VSpherePublished

from .conftest import (
    PASSWORD,
    PASSWORD_ENV,
    USER_ENV,
    Recorder,
    VcSim,
    connector,
    find_vms,
    watching_stub,
)

pytestmark = pytest.mark.timeout(120)


def make_adapter(sim: VcSim, clients: Clients | None = None,
                 **overrides: object):  # type: ignore[no-untyped-def]
    cfg = config_model("vsphere").model_validate(connector(sim, **overrides))
    return create(cfg, clients or Clients(wait_seconds=1))


def test_config_names_missing_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    data = {"type": "vsphere", "host": "vc", "user_env": USER_ENV, "password_env": PASSWORD_ENV,
            "datacenter": "DC0", "datastore": "ds", "cluster": "c", "host_system": "h",
            "insecure": True, "ca_file": "/nonexistent.pem"}
    with pytest.raises(ValidationError) as info:
        config_model("vsphere").model_validate(data)
    text = str(info.value)
    assert f"environment variable {USER_ENV} (user_env) is not set" in text
    assert f"environment variable {PASSWORD_ENV} (password_env) is not set" in text
    assert "exactly one of cluster or host_system" in text
    assert "either insecure or ca_file" in text


def test_config_rejects_unknown_keys_and_modes(vc_env: None) -> None:
    base = {"type": "vsphere", "host": "vc", "user_env": USER_ENV, "password_env": PASSWORD_ENV,
            "datacenter": "DC0", "datastore": "ds", "cluster": "c"}
    config_model("vsphere").model_validate(base)
    for bad in ({"mode": "ovf"}, {"port": 0}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            config_model("vsphere").model_validate({**base, **bad})


BASE = {"type": "vsphere", "host": "vc", "user_env": USER_ENV, "password_env": PASSWORD_ENV,
        "datacenter": "DC0", "datastore": "ds", "cluster": "c"}
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def test_config_names_a_ca_file_path_the_system_cannot_look_at(vc_env: None) -> None:
    with pytest.raises(ValidationError) as info:  # Path.is_file() raised ENAMETOOLONG
        config_model("vsphere").model_validate({**BASE, "ca_file": "c" * 5000 + ".pem"})
    assert "ca_file: cannot look at this path: File name too long" in str(info.value)


@pytest.mark.parametrize(("content", "problem"), [
    (b"this is not a certificate\n", "no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n", "PEM"),
    (b"", "no PEM certificate"),
])
def test_config_rejects_a_ca_file_that_is_not_pem(
    vc_env: None, tmp_path: Path, content: bytes, problem: str
) -> None:
    bad = tmp_path / "vcenter-ca.pem"
    bad.write_bytes(content)
    with pytest.raises(ValidationError) as info:
        config_model("vsphere").model_validate({**BASE, "ca_file": str(bad)})
    text = str(info.value)
    assert f"ca_file {str(bad)!r} cannot be used" in text and problem in text
    assert "SSLError" not in text


def test_adapter_maps_a_ca_file_broken_after_loading(vc_env: None, tmp_path: Path) -> None:
    if not SYSTEM_CA.is_file():
        pytest.skip("no system CA bundle to copy")
    ca = tmp_path / "vcenter-ca.pem"
    ca.write_bytes(SYSTEM_CA.read_bytes())
    config = config_model("vsphere").model_validate({**BASE, "ca_file": str(ca)})
    ca.write_bytes(b"garbage\n")  # edited between `layerbot check` and the publish
    with pytest.raises(PlatformError, match=r"ca_file .* cannot be used: it holds no PEM"):
        create(config)


async def test_wrong_password(vcsim: VcSim, vc_env: None, raw_disk: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    adapter = make_adapter(vcsim)
    with pytest.raises(AuthError) as info:
        await publish(adapter, Recorder().context(raw_disk, "nope"))
    assert PASSWORD_ENV in str(info.value)
    assert "wrong-password" not in str(info.value) and PASSWORD not in str(info.value)
    assert "Login failure" in str(info.value) or "login" in str(info.value).lower()
    await adapter.close()


@pytest.mark.parametrize(("override", "named"), [
    ({"datastore": "NoSuchDS"}, "datastore 'NoSuchDS'"),
    ({"folder": "Layered/Images"}, "VM folder 'Layered/Images'"),
    ({"datacenter": "DC9"}, "datacenter 'DC9'"),
    ({"cluster": None, "host_system": "esx-missing"}, "host 'esx-missing'"),
])
async def test_missing_objects_are_named(vcsim: VcSim, vc_env: None, raw_disk: Path,
                                         override: dict[str, object], named: str) -> None:
    adapter = make_adapter(vcsim, **override)
    rec = Recorder()
    with pytest.raises(NotFoundError, match=named):
        await publish(adapter, rec.context(raw_disk, "missing"))
    assert find_vms(vcsim, "missing") == []
    await adapter.close()


async def test_session_expiry_mid_publish(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    rec = Recorder()
    killed: list[str] = []

    async def expire(fraction: float, note: str) -> None:
        if not killed:
            key = adapter.session.session_key
            killed.append(key)
            vcsim.si().content.sessionManager.TerminateSession([key])

    rec.hooks.append(expire)
    published = await publish(adapter, rec.context(raw_disk, "survivor"))
    assert killed and adapter.session.logins == 2
    assert [vm._moId for vm in find_vms(vcsim, "survivor")] == [published.expect(VSpherePublished).moref]
    await adapter.close()


async def test_cancel_during_upload_leaves_nothing(vcsim: VcSim, vc_env: None,
                                                   raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    rec = Recorder()
    task = asyncio.create_task(publish(adapter, rec.context(raw_disk, "cancel-me")))

    async def cancel(fraction: float, note: str) -> None:
        assert find_vms(vcsim, "cancel-me"), "the VM exists while uploading"
        task.cancel()

    rec.hooks.append(cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert find_vms(vcsim, "cancel-me") == []
    assert rec.ctx is not None
    removed = rec.ctx.removed  # what the runner then reports
    assert any(line.startswith("removed VM cancel-me (vm-") for line in removed)
    assert any("aborted the disk upload" in line for line in removed)
    assert rec.resources == [] and await rec.cleanup(adapter) == []
    gone = Recorder(resources=[VSphereImport(lease="lease-x", vm="vm-999999", name="x")])
    gone.context(raw_disk, "x")
    assert await gone.cleanup(adapter) == [] and gone.resources == []  # already gone: fine
    await adapter.close()


async def test_watch_timeout(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "never-started"))
    expected = "waited 2 s for the VM to be powered on and shut down; the watch timed out"
    with pytest.raises(GuestTimeoutError, match=expected) as raised:
        await adapter.wait_for_shutdown(published, rec.context(raw_disk, "x", watch_timeout=2))
    assert not raised.value.retryable
    await adapter.close()


async def test_vm_deleted_during_watch(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "deleted"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.3)
    moref = published.expect(VSpherePublished).moref
    assert await adapter.unpublish(published) == [f"removed VM deleted ({moref})"]
    with pytest.raises(NotFoundError, match="deleted"):
        await asyncio.wait_for(watch, 15)
    await adapter.close()


async def test_insufficient_space(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    def one_byte_free(method: str, result: Any) -> Any:
        for item in (result.objects if method == "RetrievePropertiesEx" and result else []):
            for value in item.propSet:
                if value.name == "summary.freeSpace":
                    value.val = 1
        return result

    adapter = make_adapter(vcsim, Clients(connect=watching_stub(one_byte_free), wait_seconds=1),
                           datastore="LocalDS_1")
    with pytest.raises(InsufficientSpaceError, match=r"datastore 'LocalDS_1' has .* GiB free"):
        await publish(adapter, Recorder().context(raw_disk, "too-big"))
    assert find_vms(vcsim, "too-big") == []
    await adapter.close()


@pytest.mark.parametrize(("fault", "kind"), [
    ("vim.fault.InvalidLogin", AuthError),
    ("vim.fault.NoPermission", AuthError),
    ("vmodl.fault.ManagedObjectNotFound", NotFoundError),
    ("vim.fault.FileNotFound", NotFoundError),
    ("vim.fault.InsufficientStorageSpace", InsufficientSpaceError),
    ("vim.fault.NoDiskSpace", InsufficientSpaceError),
    ("vim.fault.Timedout", PlatformTimeoutError),
    ("vim.fault.DuplicateName", PlatformError),
])
def test_faults_map_to_adapter_errors(fault: str, kind: type[Exception]) -> None:
    from pyVmomi import vim, vmodl

    from adapters.vsphere.faults import translate

    ns, _, name = fault.rpartition(".")
    cls = getattr((vim.fault if ns == "vim.fault" else vmodl.fault), name)
    error = translate(cls(msg="vCenter says no"), "importing win10")
    assert type(error) is kind
    assert str(error) == "vSphere: importing win10 failed: vCenter says no"


def test_transport_errors_map_to_adapter_errors() -> None:
    from adapters.vsphere.faults import translate

    assert isinstance(translate(ConnectionRefusedError(111, "refused"), "x"),
                      PlatformTimeoutError)
    assert isinstance(translate(TimeoutError(), "x"), PlatformTimeoutError)


def test_module_imports_no_sdk() -> None:
    import subprocess
    import sys

    code = ("import sys, adapters.vsphere; "
            "bad = [m for m in sys.modules if m.startswith(('pyVmomi', 'pyVim', 'aiohttp'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_watch_of_a_removed_vm(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    published = await publish(adapter, Recorder().context(raw_disk, "gone"))
    await adapter.unpublish(published)
    with pytest.raises(NotFoundError, match="no longer exists"):
        await adapter.wait_for_shutdown(published, Recorder().context(raw_disk, "x"))
    await adapter.close()


async def test_idle_session_expiry_mid_publish(vcsim_binary: Path, vc_env: None,
                                               raw_disk: Path) -> None:
    """vcsim expiring idle sessions itself (-session-idle), as vCenter does after 30 min."""
    from .simulator import start_vcsim

    sim = start_vcsim(vcsim_binary, "-session-idle", "1s")
    try:
        adapter = make_adapter(sim)
        rec = Recorder()
        stalled: list[bool] = []

        async def stall(fraction: float, note: str) -> None:
            if not stalled:
                stalled.append(True)
                await asyncio.sleep(2.5)  # the upload stalls; the session expires meanwhile

        rec.hooks.append(stall)
        published = await publish(adapter, rec.context(raw_disk, "idle"))
        assert adapter.session.logins >= 2
        assert [vm._moId for vm in find_vms(sim, "idle")] == [published.expect(VSpherePublished).moref]
        await adapter.close()
    finally:
        sim.stop()


async def test_upload_failure_removes_the_vm(vcsim: VcSim, vc_env: None, raw_disk: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter(vcsim)
    real = adapter.session.device_url
    monkeypatch.setattr(adapter.session, "device_url",
                        lambda url: real(url).replace("/nfc/", "/nfc/no-such-lease-"))
    rec = Recorder()
    with pytest.raises(PlatformError, match="uploading the disk failed: HTTP 404"):
        await publish(adapter, rec.context(raw_disk, "broken-upload"))
    assert find_vms(vcsim, "broken-upload") == []
    assert rec.ctx is not None
    removed = rec.ctx.removed
    assert any(line.startswith("removed VM broken-upload (vm-") for line in removed)
    await adapter.close()


async def test_watch_refuses_another_vcenter(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    from adapters.base import Published

    adapter = make_adapter(vcsim)
    published = await publish(adapter, Recorder().context(raw_disk, "elsewhere"))
    moved = Published.from_json(published.to_json())
    moved.resource = published.expect(VSpherePublished).model_copy(
        update={"vcenter": "00000000-0000-0000-0000-000000000000"})
    with pytest.raises(NotFoundError, match="is not the vCenter the image was published to"):
        await adapter.wait_for_shutdown(moved, Recorder().context(raw_disk, "x"))
    await adapter.close()


async def test_detach_during_upload_keeps_the_vm_for_cleanup(vcsim: VcSim, vc_env: None,
                                                             raw_disk: Path) -> None:
    """A runner that detaches (shutdown, lost lease) leaves the recorded VM; the lease is
    aborted. The next runner's cleanup of the recorded resources removes the VM."""
    from pyVmomi import vim

    from adapters.steps import detach
    from adapters.vsphere.upload import lease_props

    adapter = make_adapter(vcsim)
    rec = Recorder()
    task = asyncio.create_task(publish(adapter, rec.context(raw_disk, "detach-me")))

    async def detach_now(fraction: float, note: str) -> None:
        detach(task)

    rec.hooks.append(detach_now)
    with pytest.raises(asyncio.CancelledError):
        await task
    vms = find_vms(vcsim, "detach-me")
    importing = rec.latest(VSphereImport)
    assert importing is not None and [vm._moId for vm in vms] == [importing.vm]  # kept, recorded
    lease_id = importing.lease
    try:  # through the adapter's session: vcsim's leases belong to the session
        state = await adapter.session.call(
            lambda si: lease_props(si, vim.HttpNfcLease(lease_id, si._stub)).get("state"),
            "reading the lease")
    except (PlatformError, NotFoundError):  # an aborted lease is removed
        state = "gone"
    assert state in ("error", "gone")  # aborted: the partial VM gets no more data
    removed = await rec.cleanup(adapter)  # the next runner
    assert any(line.startswith("removed VM detach-me (vm-") for line in removed)
    assert find_vms(vcsim, "detach-me") == []
    await adapter.close()


class _Session:
    """VSphereSession.call without a server."""

    def __init__(self) -> None:
        self.doing: list[str] = []

    async def call(self, fn, doing: str):  # type: ignore[no-untyped-def]
        self.doing.append(doing)
        return fn(object())


class _Lease:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _call(self, name: str, *args: object) -> None:
        self.calls.append((name, args))
        if self.error is not None:
            raise self.error

    def HttpNfcLeaseProgress(self, percent: int) -> None:
        self._call("progress", percent)

    def HttpNfcLeaseComplete(self) -> None:
        self._call("complete")


async def test_lease_calls_share_one_helper() -> None:
    from pyVmomi import vmodl

    from adapters.vsphere.upload import ImportLeaseLost, _lease_call, complete, set_progress

    session, lease = _Session(), _Lease()
    await set_progress(session, lease, 42)  # type: ignore[arg-type]
    await complete(session, lease)  # type: ignore[arg-type]
    assert lease.calls == [("progress", (42,)), ("complete", ())]
    assert session.doing == ["updating the import lease", "completing the import"]
    gone = _Lease(vmodl.fault.ManagedObjectNotFound(msg="lease-7 is gone"))
    for call in (lambda: set_progress(session, gone, 1), lambda: complete(session, gone)):  # type: ignore[arg-type]
        with pytest.raises(ImportLeaseLost, match=r"import lease was lost \(lease-7 is gone\)"):
            await call()
    other = _Lease(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await _lease_call(session, other.HttpNfcLeaseComplete, "x")  # type: ignore[arg-type]


def test_a_busy_or_cut_short_answer_is_worth_another_call() -> None:
    """What a proxy or a restarting vCenter answers in place of SOAP (tests/faults finds them)."""
    import http.client
    from xml.parsers.expat import ExpatError

    from adapters.vsphere.faults import translate

    for status in ("503 Service Unavailable", "502 Bad Gateway", "429 Too Many Requests"):
        busy = translate(http.client.HTTPException(status), "finding the placement")
        assert busy.retryable, status
        assert str(busy) == (f"vSphere: finding the placement failed: HTTP {status} "
                             "(vCenter is busy or restarting)")
    assert not translate(http.client.HTTPException("404 Not Found"), "x").retryable
    cut = translate(ExpatError("no element found: line 1, column 120"), "reading the datastore")
    assert cut.retryable and "cut short" in str(cut) and "no element found" in str(cut)
    down = translate(Exception("vc.example:443 is down or is not a VIM server"), "connecting")
    assert down.retryable
    assert str(down) == ("vSphere: connecting failed: "
                         "Exception: vc.example:443 is down or is not a VIM server")


async def test_an_import_whose_vm_was_never_learnt_is_removed_through_its_lease(
        vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    """The answer naming the lease's VM is lost (here: vCenter refuses the read that would have
    named it): the recorded lease alone leads cleanup to the VM."""
    from pyVmomi import vim

    refused: list[str] = []

    def lose_the_ready_lease(method: str, result: Any) -> Any:
        if method == "RetrievePropertiesEx" and result is not None and not refused:
            for item in result.objects:
                if any(v.name == "state" and v.val == "ready" for v in item.propSet) \
                        and isinstance(item.obj, vim.HttpNfcLease):
                    refused.append(item.obj._moId)
                    raise vim.fault.InvalidState(msg="the lease cannot be read now")
        return result

    adapter = make_adapter(vcsim, Clients(connect=watching_stub(lose_the_ready_lease),
                                          wait_seconds=1))
    rec = Recorder()
    with pytest.raises(PlatformError, match="the lease cannot be read now"):
        await publish(adapter, rec.context(raw_disk, "vm-never-learnt"))
    assert refused
    assert find_vms(vcsim, "vm-never-learnt") == []
    assert rec.latest(VSphereImport) is None
    await adapter.close()


async def test_a_busy_answer_while_waiting_for_the_lease_is_read_again(
        vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    import http.client

    from pyVmomi import vim

    busy: list[str] = []

    def busy_once(method: str, result: Any) -> Any:
        if method == "RetrievePropertiesEx" and result is not None and not busy and any(
                isinstance(item.obj, vim.HttpNfcLease) for item in result.objects):
            busy.append(method)
            raise http.client.HTTPException("503 Service Unavailable")
        return result

    adapter = make_adapter(vcsim, Clients(connect=watching_stub(busy_once), wait_seconds=1))
    published = await publish(adapter, Recorder().context(raw_disk, "lease-read-again"))
    assert busy
    assert [vm._moId for vm in find_vms(vcsim, "lease-read-again")] == [
        published.expect(VSpherePublished).moref]
    await adapter.close()
