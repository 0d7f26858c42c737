"""Review findings of issue 12 on the xenserver adapter: a cancel during a create call, xapi's
302 on upload, ambiguous names, a VM that ran while nobody watched, the session reference
read off the event loop, and a vm_template that is a VM with a disk."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

import pytest

from adapters.base import NotFoundError, Published, clean_up, publish
from adapters.steps import Outcome, cancel
from adapters.xenserver import XenVmRan

from .conftest import dynamic_vhd, make_adapter, short_clients, xen_config
from .test_xenserver_publish import context, until
from .xapi_double import XapiDouble

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("method", ["VDI.create", "VM.clone"])
async def test_cancel_during_a_create_call_leaves_nothing(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, method: str) -> None:
    gate = xapi.state.holds[method] = threading.Event()
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        job = asyncio.create_task(publish(adapter, ctx))
        await until(lambda: xapi.state.entered[method] == 1, f"{method} under way")
        cancel(job)
        await asyncio.sleep(0.1)  # the cancel is delivered while xapi still works on the call
        gate.set()  # ...which then completes: what it made must still be cleaned up
        with pytest.raises(asyncio.CancelledError):
            await job
        # the session's calls run one at a time: this one waits for any call still under way
        await adapter.session.xapi("syncing", lambda x: x.VM.get_by_name_label("none"))
        assert xapi.leftovers() == [], method  # a clone still a template counts too
        assert ctx.resources == [] and ctx.removed, method
    finally:
        gate.set()
        await adapter.close()


async def test_an_upload_redirected_by_a_302_is_sent_again_there(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    xapi.state.redirect_import = True
    adapter = make_adapter(xen_config(xapi), short_clients())
    notes: list[tuple[float, str]] = []
    try:
        with caplog.at_level(logging.DEBUG):
            await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd"), notes=notes))
    finally:
        await adapter.close()
    [upload] = xapi.state.uploads
    assert upload.size == (tmp_path / "disk.vhd").stat().st_size
    assert (xapi.state.redirects, xapi.state.puts) == (1, 2)
    assert "OpaqueRef" not in caplog.text and all("OpaqueRef" not in n for _, n in notes)


@pytest.mark.parametrize(("key", "cls", "add"), [
    ("sr", "SR", lambda x: x.add_sr("Local storage", 1 << 40)),
    ("network", "network", lambda x: x.add_network("Pool-wide network associated with eth0")),
    ("vm_template", "VM", lambda x: x.add_vm("Windows 10 (64-bit)", template=True)),
])
async def test_a_name_matching_several_objects_is_refused_naming_key_value_and_count(
        xapi: XapiDouble, xen_env: None, tmp_path: Path, key: str, cls: str, add: object) -> None:
    add(xapi)  # type: ignore[operator]
    adapter = make_adapter(xen_config(xapi), short_clients())
    try:
        value = xen_config(xapi).model_dump()[key]
        with pytest.raises(NotFoundError, match=rf"{key}: 2 {cls} objects are named '{re.escape(value)}'"
                                                r"; give a unique name or the UUID"):
            await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd")))
        assert xapi.leftovers() == []
    finally:
        await adapter.close()


async def test_a_uuid_names_an_sr_network_and_template_whatever_their_names(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    sr = xapi.add_sr("Local storage", 1 << 40)  # a second SR of the same name
    network = next(iter(xapi.state.networks.values()))["uuid"]
    template = xapi.vm_by_name("Windows 10 (64-bit)")
    assert template is not None
    adapter = make_adapter(xen_config(xapi, sr=xapi.state.srs[sr]["uuid"], network=network,
                                      vm_template=template[1]["uuid"]), short_clients())
    try:
        await publish(adapter, context(dynamic_vhd(tmp_path / "disk.vhd")))
    finally:
        await adapter.close()
    [vdi] = xapi.state.vdis.values()
    assert vdi["SR"] == sr


async def test_a_vm_that_ran_and_shut_down_while_nobody_watched_is_done(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    adapter = make_adapter(xen_config(xapi), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        published = await publish(adapter, ctx)
        # no runner watches (down before the watch recorded "ran"): Running, then Halted
        xapi.set_power("win10-office-1", "Running")
        xapi.set_power("win10-office-1", "Halted")
        await asyncio.wait_for(adapter.wait_for_shutdown(published, ctx), 10)
        assert [r for r in ctx.resources if isinstance(r, XenVmRan)]
    finally:
        await adapter.close()


async def test_a_halted_vm_never_started_is_still_waited_for(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    adapter = make_adapter(xen_config(xapi, watch_timeout=1.5), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        published = await publish(adapter, ctx)
        with pytest.raises(Exception, match="watch_timeout"):
            await adapter.wait_for_shutdown(published, ctx)
    finally:
        await adapter.close()


async def test_the_session_reference_is_read_without_blocking_the_event_loop(
        xapi: XapiDouble, xen_env: None) -> None:
    adapter = make_adapter(xen_config(xapi), short_clients())
    session = adapter.session
    try:
        await session.xapi("logging in", lambda x: x.VM.get_by_name_label("nothing"))
        locked, loop_ran = threading.Event(), threading.Event()
        freed_by_loop: list[bool] = []

        def log_in_again() -> None:  # a re-login on a worker thread holds the session's lock
            with session._lock:
                locked.set()
                freed_by_loop.append(loop_ran.wait(5))

        holder = threading.Thread(target=log_in_again)
        holder.start()
        await asyncio.to_thread(locked.wait, 5)
        reading = asyncio.ensure_future(session.session_ref())
        await asyncio.sleep(0.05)  # the loop runs on while the reference waits for the lock
        loop_ran.set()
        ref = await asyncio.wait_for(reading, 10)
        await asyncio.to_thread(holder.join, 10)
        assert freed_by_loop == [True] and ref.startswith("OpaqueRef:")
    finally:
        await adapter.close()


async def test_a_vm_template_that_is_a_vm_gets_the_uploaded_disk_at_device_0(
        xapi: XapiDouble, xen_env: None, tmp_path: Path) -> None:
    gold = xapi.add_vm("gold-vm")
    xapi.add_disk(gold, "gold-system", "0")
    xapi.add_disk(gold, "gold-data", "1")
    adapter = make_adapter(xen_config(xapi, vm_template="gold-vm"), short_clients())
    ctx = context(dynamic_vhd(tmp_path / "disk.vhd"))
    try:
        published = await publish(adapter, ctx)
        assert isinstance(published, Published)
        _, vm = xapi.vm_by_name("win10-office-1") or ("", {})
        disks = {xapi.state.vbds[b]["userdevice"]: xapi.state.vdis[xapi.state.vbds[b]["VDI"]]["name_label"]
                 for b in vm["VBDs"]}
        assert disks == {"0": "win10-office-1", "1": "gold-data"}
        names = sorted(v["name_label"] for v in xapi.state.vdis.values())
        # the clone's copy of gold-system is gone
        assert names == ["gold-data", "gold-data", "gold-system", "win10-office-1"]
        assert vm["other_config"] == {"layerbot-task": "t0feed01"}
        await clean_up(adapter, ctx, Outcome.FAILED)
        assert xapi.leftovers() == []
    finally:
        await adapter.close()
