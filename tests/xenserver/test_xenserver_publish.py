"""The xenserver adapter against the XenAPI double: publish, watch, failures, cleanup."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from adapters import resources
from adapters.base import (
    AuthError,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PublishContext,
    Published,
    RetryableError,
    clean_up,
    publish,
)
from adapters.resources import Resource
from adapters.steps import Outcome, cancel
from adapters.xenserver import XenPublished, XenVmRan
from adapters.xenserver.xen_watch import HostEvents, host_events

from .conftest import PASSWORD, PASSWORD_ENV, dynamic_vhd, make_adapter, short_clients, xen_config
from .xapi_double import XapiDouble

pytestmark = pytest.mark.timeout(120)


def context(vhd: tuple[Path, int], name: str = "win10-office-1",
            notes: list[tuple[float, str]] | None = None,
            recorded: list[Resource] | None = None) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append((fraction, note))

    return PublishContext(task_id="t0feed01", template="win10-office", image_name=name,
                          artifact=vhd[0], artifact_format="vhd-dynamic", virtual_size=vhd[1],
                          progress=progress, resources=list(recorded or []))


async def until(check: Any, what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_publish_then_power_on_and_off_is_done(xapi: XapiDouble, xen_env: None,
                                                      tmp_path: Path) -> None:
    clients = short_clients()
    adapter = make_adapter(xen_config(xapi, console_url="https://xo.test/#/vms/{uuid}/general"),
                           clients)
    notes: list[tuple[float, str]] = []
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"), notes=notes)
    try:
        published = await publish(adapter, ctx)
        ref, vm = xapi.vm_by_name("win10-office-1") or ("", {})
        assert vm["power_state"] == "Halted" and not vm["is_a_template"] and vm["provisioned"]
        assert vm["other_config"] == {"layerbot-task": "t0feed01"}  # the template's disks: not
        [vbd] = [xapi.state.vbds[b] for b in vm["VBDs"]]
        assert (vbd["userdevice"], vbd["bootable"], vbd["type"]) == ("0", True, "Disk")
        vdi = xapi.state.vdis[vbd["VDI"]]
        assert vdi["virtual_size"] == 8 << 20 and vdi["imported"] == (tmp_path / "disk.vhd").stat().st_size
        [vif] = [xapi.state.vifs[v] for v in vm["VIFs"]]
        assert xapi.state.networks[vif["network"]]["name_label"] == "Pool-wide network associated with eth0"
        assert xapi.state.tasks == {}  # the upload's task was destroyed
        assert published.link == f"https://xo.test/#/vms/{vm['uuid']}/general"
        text = adapter.next_steps(published)
        assert text.startswith("The virtual machine win10-office-1 is created, but off.")
        assert "log in as a local user" in text and vm["uuid"] in text
        assert any("uploading disk win10-office-1" in n for _, n in notes)
        assert all("OpaqueRef" not in n for _, n in notes)  # no session id in any note

        watch = asyncio.create_task(adapter.wait_for_shutdown(published, ctx))
        await until(lambda: any("waiting for VM" in n for _, n in notes), "the watch")
        await until(lambda: xapi.state.event_calls > 0, "the event session's first call")
        xapi.drop_sessions()  # xapi restarted: both sessions log in again
        logins = xapi.state.logins
        xapi.set_power("win10-office-1", "Running")
        await until(lambda: any(isinstance(r, XenVmRan) for r in ctx.resources), "Running")
        assert not watch.done()
        xapi.set_power("win10-office-1", "Halted")
        await asyncio.wait_for(watch, 20)
        assert xapi.state.logins > logins
        assert notes[-1] == (1.0, "VM win10-office-1 has shut down")
        assert host_events(adapter._key) is None  # the host's event session ended with the watch
        assert ref in xapi.state.vms  # a finished VM is kept
    finally:
        await adapter.close()


async def test_one_event_session_serves_every_waiting_vm(xapi: XapiDouble, xen_env: None,
                                                         tmp_path: Path) -> None:
    clients = short_clients()
    adapter = make_adapter(xen_config(xapi), clients)
    vhd = dynamic_vhd(tmp_path / "disk.vhd")
    try:
        contexts = [context(vhd, f"vm-{i}") for i in range(3)]
        published = [await publish(adapter, ctx) for ctx in contexts]
        watches = [asyncio.create_task(adapter.wait_for_shutdown(p, c))
                   for p, c in zip(published, contexts, strict=True)]
        await until(lambda: (h := host_events(adapter._key)) is not None and len(h.waiting) == 3
                    and xapi.state.event_calls > 0, "three waiting VMs and the event session")
        before = xapi.state.logins
        for i in range(3):
            xapi.set_power(f"vm-{i}", "Running")
            xapi.set_power(f"vm-{i}", "Halted")
        await asyncio.wait_for(asyncio.gather(*watches), 20)
        assert xapi.state.logins == before  # one event session, logged in before
    finally:
        await adapter.close()


async def test_an_unexpected_event_loop_error_reaches_each_waiting_task_as_its_own(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter(xen_config(xapi), short_clients())
    vhd = dynamic_vhd(tmp_path / "disk.vhd")
    release = asyncio.Event()

    async def broken(self: HostEvents, token: str) -> tuple[list[dict[str, Any]], str]:
        await release.wait()
        raise KeyError("events")
    try:
        contexts = [context(vhd, f"vm-{i}") for i in range(2)]
        published = [await publish(adapter, ctx) for ctx in contexts]
        monkeypatch.setattr(HostEvents, "_next", broken)
        watches = [asyncio.create_task(adapter.wait_for_shutdown(p, c))
                   for p, c in zip(published, contexts, strict=True)]
        await until(lambda: (h := host_events(adapter._key)) is not None and len(h.waiting) == 2,
                    "two waiting VMs")
        release.set()
        errors = await asyncio.wait_for(asyncio.gather(*watches, return_exceptions=True), 20)
        assert all(isinstance(e, PlatformError) and str(e).endswith("failed: 'events' is missing")
               for e in errors), errors
        assert errors[0] is not errors[1]
        assert host_events(adapter._key) is None
    finally:
        await adapter.close()


async def test_wrong_credentials_are_an_auth_error_without_the_password(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    adapter = make_adapter(xen_config(xapi), short_clients())
    try:
        expected = (rf"logging in as root \(password from \${PASSWORD_ENV}\) failed: "
                    "SESSION_AUTHENTICATION_FAILED")
        with pytest.raises(AuthError, match=expected) as err:
            await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd")))
        assert "not-the-password" not in str(err.value) and PASSWORD not in str(err.value)
        assert xapi.leftovers("win10-office-1") == []
    finally:
        await adapter.close()


@pytest.mark.parametrize("key,cls", [("sr", "SR"), ("network", "network"), ("vm_template", "VM")])
async def test_a_missing_sr_network_or_template_is_named(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, key: str, cls: str) -> None:
    adapter = make_adapter(xen_config(xapi, **{key: "Nope"}), short_clients())
    try:
        with pytest.raises(NotFoundError, match=rf"{key}: no {cls} named 'Nope'"):
            await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd")))
        assert xapi.leftovers("win10-office-1") == []  # found out before anything was made
    finally:
        await adapter.close()


async def test_an_import_task_failing_mid_way_keeps_the_code_and_leaves_nothing(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    xapi.state.fail_import = ["SR_FULL", "8388608", "0"]
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        with pytest.raises(InsufficientSpaceError, match=r"importing disk win10-office-1 failed: "
                                                         r"SR_FULL \(8388608, 0\)"):
            await publish(adapter, ctx)
        assert xapi.leftovers("win10-office-1") == [] and ctx.resources == []
        assert [line.split(" (")[0] for line in ctx.removed] == ["XenServer disk win10-office-1"]
    finally:
        await adapter.close()


async def test_an_upload_cut_off_once_is_sent_again_into_the_same_disk(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    xapi.state.cut_upload_at = 1 << 20
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        await publish(adapter, ctx)
        [upload] = xapi.state.uploads
        assert xapi.state.puts == 2 and len(xapi.state.vdis) == 1
        assert upload.size == (tmp_path / "disk.vhd").stat().st_size
        assert xapi.state.tasks == {}  # both upload tasks destroyed
    finally:
        await adapter.close()


async def test_an_upload_cut_off_every_time_fails_without_the_session_and_leaves_nothing(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    xapi.state.cut_upload_at, xapi.state.cut_uploads = 1 << 20, 3
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        with pytest.raises(RetryableError, match=r"the upload of disk win10-office-1 was cut off "
                                                 r"after \d+ of \d+ bytes") as err:
            await publish(adapter, ctx)
        assert "OpaqueRef" not in str(err.value) and "session" not in str(err.value)
        assert xapi.state.puts == 3  # upload_retry: 3 attempts
        assert xapi.leftovers() == [] and ctx.resources == []
        assert xapi.state.uploads == []
    finally:
        await adapter.close()


async def test_a_vhd_larger_than_the_disk_is_refused_by_the_double(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    """The double checks the VHD's virtual size against the VDI (as xapi's import does)."""
    vhd, size = dynamic_vhd(tmp_path / "disk.vhd")
    adapter = make_adapter(xen_config(xapi), short_clients())
    try:
        with pytest.raises(Exception, match=r"VDI_IO_ERROR \(the VHD's virtual size 8388608 "
                                            r"exceeds the VDI's 4194304\)"):
            await publish(adapter, context((vhd, size // 2)))
        assert xapi.leftovers("win10-office-1") == []
    finally:
        await adapter.close()


async def test_cancel_at_any_step_leaves_nothing_behind(xapi: XapiDouble, xen_env: None,
                                                        tmp_path: Path) -> None:
    adapter = make_adapter(xen_config(xapi), short_clients())
    vhd = dynamic_vhd(tmp_path / "disk.vhd")
    try:
        for marker in ("uploading disk", "cloning"):
            job: list[asyncio.Task[Published]] = []
            ctx = context(vhd)

            async def stop(fraction: float, note: str, marker: str = marker,
                           job: list[asyncio.Task[Published]] = job) -> None:
                if marker in note and job:
                    cancel(job[0])

            ctx.progress = stop
            job.append(asyncio.create_task(publish(adapter, ctx)))
            with pytest.raises(asyncio.CancelledError):
                await job[0]
            assert xapi.leftovers("win10-office-1") == [], marker
            assert ctx.resources == [] and ctx.removed, marker
    finally:
        await adapter.close()


async def test_the_published_vm_survives_a_json_round_trip_and_cleanup_removes_it_all(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        published = await publish(adapter, ctx)
        uuid = published.expect(XenPublished).uuid
        assert published.link == xapi.url  # no console_url: the host, and the VM's name and UUID
        assert published.summary == f"XenServer VM win10-office-1 (UUID {uuid}) on {xapi.url}, Halted"
        again = Published.from_json(published.to_json())
        assert again.expect(XenPublished) == published.resource
        later = context(dynamic_vhd(tmp_path / "disk2.vhd"),
                        recorded=resources.load(resources.dump(ctx.resources), where="test"))
        removed = await clean_up(make_adapter(adapter.config, adapter.clients), later, Outcome.FAILED)
        assert removed[0] == f"XenServer VM win10-office-1 ({published.expect(XenPublished).uuid})"
        assert "XenServer disk win10-office-1" in removed
        assert xapi.leftovers("win10-office-1") == []
    finally:
        await adapter.close()




async def test_a_halted_report_older_than_the_running_one_does_not_end_the_watch(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    """The watch's first read and the event session race: a Halted read before the guest
    started can be queued after its Running event (seen once in a full run). Only the VM's
    state now may end the watch."""
    adapter = make_adapter(xen_config(xapi), short_clients())
    notes: list[tuple[float, str]] = []
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"), notes=notes)
    try:
        published = await publish(adapter, ctx)
        vm_ref = published.expect(XenPublished).ref
        watch = asyncio.create_task(adapter.wait_for_shutdown(published, ctx))
        state_when_done: list[str] = []
        watch.add_done_callback(lambda _: state_when_done.append(
            xapi.state.vms[vm_ref]["power_state"]))
        await until(lambda: xapi.state.event_calls > 0, "the event session's first call")
        xapi.set_power("win10-office-1", "Running")
        await until(lambda: any(isinstance(r, XenVmRan) for r in ctx.resources), "Running")

        assert not watch.done(), f"the watch ended while the VM was {state_when_done}"
        gate = xapi.state.holds["VM.get_power_state"] = threading.Event()
        events = host_events(adapter._key)
        assert events is not None
        for queue in events.waiting[vm_ref]:
            queue.put_nowait("Halted")  # the stale report
        await until(lambda: watch.done() or xapi.state.entered["VM.get_power_state"] > 0,
                    "the watch to take the stale report")
        gate.set()
        xapi.set_power("win10-office-1", "Halted")
        await asyncio.wait_for(watch, 20)
        assert state_when_done == ["Halted"]
    finally:
        await adapter.close()
