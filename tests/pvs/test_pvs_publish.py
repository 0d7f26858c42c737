"""Publishing a vDisk: the copy to a real Samba share, the cmdlets through the recorded
PowerShell runner; with a hypervisor connector (the Prism double), its VM and watch."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Capability, PlatformError, RetryableError, Watcher, clean_up, publish
from adapters.hyperv import HypervVmRan
from adapters.nutanix import NutanixPoweredOn, NutanixVm
from adapters.pvs import PvsDiskLocator, PvsFile, PvsPublished
from adapters.steps import Outcome, cancel
from tests.hyperv.conftest import LOCAL_PATH, hyperv_config
from tests.hyperv.conftest import short_clients as hyperv_clients
from tests.hyperv.hyperv_double import HyperVDouble
from tests.nutanix.conftest import FAST, connector
from tests.nutanix.prism_double import PrismDouble
from tests.windows_remote.samba_peer import SambaPeer

from .conftest import HOSTILE_IMAGE, HOSTILE_TEMPLATE, context, make_adapter, vhdx_disk
from .pvs_double import PvsDouble

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return vhdx_disk(tmp_path / "disk.vhdx")


async def test_publish_without_hypervisor_is_done_at_registration(
        farm: PvsDouble, smb_env: SambaPeer, disk: Path) -> None:
    adapter = make_adapter(farm, smb_env)
    notes: list[tuple[float, str]] = []
    ctx = context(disk, HOSTILE_IMAGE, notes, template=HOSTILE_TEMPLATE)
    try:
        published = await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert adapter.capabilities == Capability.NONE and not hasattr(adapter, "wait_for_shutdown")
    # the file on the share is the disk, byte for byte, under the vDisk's name
    assert (smb_env.share_dir / f"{HOSTILE_IMAGE}.vhdx").read_bytes() == disk.read_bytes()
    assert any("copying" in n for _, n in notes)
    assert notes[-1] == (1.0, f"vDisk {HOSTILE_IMAGE} is registered")
    where = {"Name": HOSTILE_IMAGE, "Store": "Store 1", "Site": "Site's 1"}
    assert farm.of("Import-PvsDisk") == [
        {**where, "Description": f"layerbot: template {HOSTILE_TEMPLATE}, task t0c0ffee"}]
    assert farm.of("Set-PvsDisk") == [{**where, "WriteCacheType": 9, "LicenseMode": 2,
                                       "WriteCacheSize": 4096}]
    for call in farm.calls:  # values are parameters of the script block, never its text
        assert call.script.startswith(f"param({', '.join('$' + k for k in call.parameters)})\n")
        for value in (HOSTILE_IMAGE, HOSTILE_TEMPLATE, "Store 1", "Site's 1", "brien", "calc"):
            assert value not in call.script
    disk_record = farm.disks[("Store 1", "Site's 1", HOSTILE_IMAGE)]
    assert (disk_record["WriteCacheType"], disk_record["LicenseMode"]) == (9, 2)
    assert isinstance(published.resource, PvsPublished) and published.resource.vm is None
    assert published.link == f"{smb_env.unc}\\{HOSTILE_IMAGE}.vhdx"
    assert adapter.next_steps(published) == (
        f"The vDisk {HOSTILE_IMAGE} is registered in store Store 1, site Site's 1 on pvs01.test: "
        "assign the vDisk to your target devices.")
    assert [type(r) for r in ctx.resources] == [PvsFile, PvsDiskLocator]  # both stay
    assert farm.logins == [("pvs01.test", os.environ["LAYERBOT_TEST_SMB_USER"])]


async def test_a_cmdlet_error_keeps_its_message_and_removes_the_file_and_locator(
        farm: PvsDouble, smb_env: SambaPeer, disk: Path) -> None:
    message = "Set-PvsDisk : The write cache type 9 is not valid for vDisk win10-x in site Site's 1."
    farm.failing["Set-PvsDisk"] = message
    adapter = make_adapter(farm, smb_env)
    ctx = context(disk, "win10-x")
    try:
        with pytest.raises(PlatformError) as caught:
            await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert message in str(caught.value) and "setting the properties of vDisk win10-x" in str(caught.value)
    assert farm.of("Remove-PvsDiskLocator") == [{"Name": "win10-x", "Store": "Store 1", "Site": "Site's 1"}]
    assert farm.disks == {} and smb_env.files() == []  # the vhdx and the .pvp the import wrote
    assert ctx.resources == [] and "vDisk win10-x (store Store 1, site Site's 1)" in ctx.removed


async def test_a_copy_interrupted_once_starts_again_and_the_vdisk_is_imported(
        farm: PvsDouble, smb_env: SambaPeer, disk: Path) -> None:
    adapter = make_adapter(farm, smb_env)
    cut = smb_env.cut_copy_after_first_chunk(adapter.copier)  # type: ignore[attr-defined]
    ctx = context(disk, "win10-cut")
    try:
        await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert cut == [1 << 20]  # the first attempt lost its connection after one chunk
    assert (smb_env.share_dir / "win10-cut.vhdx").read_bytes() == disk.read_bytes()
    assert [key[2] for key in farm.disks] == ["win10-cut"]


async def test_a_copy_interrupted_at_every_attempt_fails_retryably_and_leaves_nothing(
        farm: PvsDouble, smb_env: SambaPeer, disk: Path) -> None:
    adapter = make_adapter(farm, smb_env)
    real = adapter.copier._copy_sync  # type: ignore[attr-defined]

    def copy_then_lose_the_connection(*args: Any) -> int:
        real(*args)
        raise ConnectionResetError(104, "Connection reset by peer")

    adapter.copier._copy_sync = copy_then_lose_the_connection  # type: ignore[attr-defined]
    ctx = context(disk, "win10-cut")
    try:
        with pytest.raises(RetryableError, match="connection"):
            await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert farm.calls == [] and smb_env.files() == [] and ctx.resources == []


async def test_removing_a_locator_that_was_never_imported_finds_nothing(
        farm: PvsDouble, smb_env: SambaPeer) -> None:
    adapter = make_adapter(farm, smb_env)
    try:
        assert await adapter.remove(PvsDiskLocator(name="never", store="Store 1", site="Site's 1")) == []
    finally:
        await adapter.close()
    [call] = farm.calls
    assert "try { Get-PvsDiskLocator @at } catch { $null }" in call.script


async def test_with_a_hypervisor_its_vm_is_made_and_watched_and_cleanup_removes_all(
        farm: PvsDouble, smb_env: SambaPeer, prism: PrismDouble, prism_ca: tuple[object, Path],
        disk: Path, tmp_path: Path) -> None:
    ahv = connector(prism, prism_ca[1])
    adapter = make_adapter(farm, smb_env, ahv, FAST)
    assert Capability.WATCH_POWER in adapter.capabilities and isinstance(adapter, Watcher)
    notes: list[tuple[float, str]] = []
    ctx = context(disk, "win10-20261202-101010-abc123", notes, scratch=tmp_path / "work")
    try:
        published = await publish(adapter, ctx)
        assert (smb_env.share_dir / "win10-20261202-101010-abc123.vhdx").read_bytes() == disk.read_bytes()
        [vm] = prism.vms.values()
        vm_uuid = vm["metadata"]["uuid"]
        assert vm["status"]["resources"]["power_state"] == "OFF"
        [(_, _, virtual)] = prism.uploads  # the vhdx, converted to the qcow2 Nutanix takes
        assert virtual == 8 << 20
        assert list((tmp_path / "work").iterdir()) == []  # the converted disk is gone
        assert published.link.endswith(f"/vms/{vm_uuid}/summary")
        assert published.summary.startswith("vDisk win10-20261202-101010-abc123 in store Store 1")
        text = adapter.next_steps(published)
        assert "assign the vDisk to your target devices." in text and "is created, but off" in text
        assert [type(r) for r in ctx.resources] == [PvsFile, PvsDiskLocator, NutanixVm]

        watch = asyncio.create_task(adapter.wait_for_shutdown(published, ctx))
        await asyncio.sleep(0.2)
        prism.power(vm_uuid, "ON")
        while not any(isinstance(r, NutanixPoweredOn) for r in ctx.resources):
            await asyncio.sleep(0.02)
        assert not watch.done()
        prism.power(vm_uuid, "OFF")
        await asyncio.wait_for(watch, 10)

        removed = await clean_up(adapter, ctx, Outcome.FAILED)
        assert prism.vms == {} and farm.disks == {} and smb_env.files() == []
        assert removed[0].startswith("Nutanix VM") and removed[-1].startswith("vDisk file")
    finally:
        await adapter.close()


async def test_cancel_while_the_hypervisor_uploads_removes_its_image_the_locator_and_the_file(
        farm: PvsDouble, smb_env: SambaPeer, prism: PrismDouble, prism_ca: tuple[object, Path],
        disk: Path, tmp_path: Path) -> None:
    adapter = make_adapter(farm, smb_env, connector(prism, prism_ca[1]), FAST)
    job: list[asyncio.Task[object]] = []

    async def progress(fraction: float, note: str) -> None:
        if "uploading image" in note and job:
            cancel(job[0])

    ctx = context(disk, "win10-cancel", scratch=tmp_path / "work")
    ctx.progress = progress
    try:
        job.append(asyncio.create_task(publish(adapter, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await adapter.close()
    assert farm.of("Import-PvsDisk") and farm.disks == {} and smb_env.files() == []
    assert prism.images == {} and prism.vms == {} and ctx.resources == []
    assert list((tmp_path / "work").iterdir()) == []
    assert any(line.startswith("vDisk win10-cancel") for line in ctx.removed)


async def test_with_hyper_v_the_vhdx_is_used_as_is_and_the_vm_power_cycle_is_done(
        farm: PvsDouble, smb_env: SambaPeer, disk: Path, tmp_path: Path) -> None:
    folder = smb_env.share_dir / "hv"  # Hyper-V's own folder on the share (its host's D:\...)
    folder.mkdir()
    host = HyperVDouble(LOCAL_PATH, folder)
    hv = hyperv_config(smb_env, share=f"{smb_env.unc}\\hv")
    adapter = make_adapter(farm, smb_env, hv, hyperv_clients(host))
    name = "win10-20261202-101010-abc123"
    ctx = context(disk, name, scratch=tmp_path / "work")
    try:
        published = await publish(adapter, ctx)
        assert not (tmp_path / "work").exists()  # Generation 2 takes the vhdx: nothing converted
        assert (folder / f"{name}.vhdx").read_bytes() == disk.read_bytes()
        assert (smb_env.share_dir / f"{name}.vhdx").read_bytes() == disk.read_bytes()
        [new_vm] = host.of("New-VM")
        assert new_vm.parameters["VHDPath"] == f"{LOCAL_PATH}\\{name}.vhdx"
        assert farm.of("Import-PvsDisk")[0]["Name"] == name

        watch = asyncio.ensure_future(adapter.wait_for_shutdown(published, ctx))
        await asyncio.sleep(0.2)
        host.set_state(name, "Running")
        async with asyncio.timeout(10):
            while not any(isinstance(r, HypervVmRan) for r in ctx.resources):
                await asyncio.sleep(0.01)
        assert not watch.done()
        host.set_state(name, "Off")
        await asyncio.wait_for(watch, 10)

        await clean_up(adapter, ctx, Outcome.FAILED)
        assert host.vms == {} and farm.disks == {}
        assert smb_env.files() == ["hv"] and list(folder.iterdir()) == []
    finally:
        await adapter.close()
        shutil.rmtree(folder, ignore_errors=True)
