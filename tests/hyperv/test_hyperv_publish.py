"""The Hyper-V adapter against the Samba peer (the disk) and the PowerShell double (the host)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters import create
from adapters.base import (
    Adapter,
    PlatformError,
    PublishContext,
    RetryableError,
    Watcher,
    clean_up,
    publish,
)
from adapters.hyperv import HypervPublished
from adapters.steps import Outcome
from adapters.windows_remote.powershell import PSError
from tests.windows_remote.samba_peer import SambaPeer

from .conftest import LOCAL_PATH, data_disk, hyperv_config, short_clients
from .hyperv_double import Call, HyperVDouble

pytestmark = pytest.mark.timeout(120)

NASTY = "it's \"quoted\" `n $(Remove-Item C:\\ -Recurse) ${env:X}"


def context(disk: Path, name: str, fmt: str = "vhdx", **kwargs: object) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        pass

    return PublishContext(task_id="t1234abcd", template="win10", image_name=name, artifact=disk,
                          artifact_format=fmt, virtual_size=disk.stat().st_size,  # type: ignore[arg-type]
                          progress=progress, **kwargs)  # type: ignore[arg-type]


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


async def test_publish_then_running_then_off_is_done(smb_env: SambaPeer, hyperv: HyperVDouble,
                                                     tmp_path: Path) -> None:
    disk = data_disk(tmp_path / "disk.vhdx")
    adapter = create(hyperv_config(smb_env, secure_boot="MicrosoftUEFICertificateAuthority",
                                   cpus=4, memory_mb=6144), short_clients(hyperv))
    ctx = context(disk, "win10-20261201-0101-ab12cd")
    try:
        published = await publish(adapter, ctx)
        assert smb_env.files() == ["win10-20261201-0101-ab12cd.vhdx"]
        assert digest(smb_env.share_dir / "win10-20261201-0101-ab12cd.vhdx") == digest(disk)
        [new_vm] = hyperv.of("New-VM")
        assert new_vm.parameters == {
            "Name": "win10-20261201-0101-ab12cd", "Generation": 2, "MemoryStartupBytes": 6144 * 2**20,
            "VHDPath": f"{LOCAL_PATH}\\win10-20261201-0101-ab12cd.vhdx", "SwitchName": "LabSwitch",
            "Notes": "layerbot task t1234abcd"}
        [vm] = hyperv.vms.values()
        assert [c.parameters for c in hyperv.of("Set-VMProcessor")] == [{"VMId": vm["VMId"], "Count": 4}]
        assert [c.parameters for c in hyperv.of("Set-VMFirmware")] == [
            {"VMId": vm["VMId"], "SecureBootTemplate": "MicrosoftUEFICertificateAuthority"}]
        assert vm["State"] == "Off"
        assert published.link == "VM win10-20261201-0101-ab12cd on hv01.lab.example"
        assert adapter.next_steps(published).startswith(
            "The virtual machine win10-20261201-0101-ab12cd is created, but off. Power it on")
        assert "local user" in adapter.next_steps(published)
        assert isinstance(adapter, Watcher)

        watch = asyncio.ensure_future(adapter.wait_for_shutdown(published, ctx))
        await asyncio.sleep(0.2)
        assert not watch.done()  # Off, but it has not run yet
        hyperv.set_state("win10-20261201-0101-ab12cd", "Running")
        await asyncio.sleep(0.3)
        assert not watch.done()
        hyperv.set_state("win10-20261201-0101-ab12cd", "Off")
        await asyncio.wait_for(watch, 10)
        assert any(r.kind == "hyperv.vm_ran" for r in ctx.resources)
    finally:
        await adapter.close()


async def test_one_query_per_host_serves_every_waiting_task(smb_env: SambaPeer, hyperv: HyperVDouble,
                                                            tmp_path: Path) -> None:
    disk = data_disk(tmp_path / "disk.vhdx", 2)
    clients = short_clients(hyperv)
    adapters: list[Adapter] = [create(hyperv_config(smb_env), clients) for _ in range(3)]
    try:
        contexts = [context(disk, f"vm{i}") for i in range(3)]
        published = [await publish(a, c) for a, c in zip(adapters, contexts, strict=True)]
        watches = [asyncio.ensure_future(a.wait_for_shutdown(p, c))  # type: ignore[attr-defined]
                   for a, p, c in zip(adapters, published, contexts, strict=True)]
        await asyncio.sleep(0.3)
        before = len(hyperv.of("Get-VM"))
        await asyncio.sleep(0.3)
        rounds = hyperv.of("Get-VM")[before:]
        assert rounds and all(sorted(c.parameters["Names"]) == ["vm0", "vm1", "vm2"] for c in rounds)
        for name in ("vm0", "vm1", "vm2"):
            hyperv.set_state(name, "Running")
        await asyncio.sleep(0.3)
        for name in ("vm0", "vm1", "vm2"):
            hyperv.set_state(name, "Off")
        await asyncio.wait_for(asyncio.gather(*watches), 10)
    finally:
        for a in adapters:
            await a.close()
    assert clients.pool.shared() == []  # the watch released its share of the runspace


async def test_values_reach_powershell_as_parameters_never_as_script_text(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    disk = data_disk(tmp_path / "disk.vhdx", 1)
    adapter = create(hyperv_config(smb_env, secure_boot=NASTY, switch=NASTY), short_clients(hyperv))
    ctx = context(disk, NASTY)
    try:
        await publish(adapter, ctx)
        [new_vm] = hyperv.of("New-VM")
        [firmware] = hyperv.of("Set-VMFirmware")
        assert new_vm.parameters["Name"] == NASTY and new_vm.parameters["SwitchName"] == NASTY
        assert firmware.parameters["SecureBootTemplate"] == NASTY
        # the file name on the share keeps only safe characters
        safe = "it_s__quoted___n___Remove-Item_C___-Recurse____env_X_.vhdx"
        assert new_vm.parameters["VHDPath"] == f"{LOCAL_PATH}\\{safe}"
        for call in hyperv.calls:
            assert "Remove-Item" not in call.script and "quoted" not in call.script
            assert call.script.startswith("param(") and "$ErrorActionPreference = 'Stop'" in call.script
        assert "-SecureBootTemplate $SecureBootTemplate" in firmware.script
        await clean_up(adapter, ctx, Outcome.FAILED)
        assert hyperv.vms == {} and smb_env.files() == []
    finally:
        await adapter.close()


async def test_a_cmdlet_error_keeps_its_message_and_cleanup_removes_the_disk(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    hyperv.fail_next["New-VM"] = PSError(
        "The operation failed because the virtual switch 'LabSwitch' could not be found.",
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM", "InvalidArgument")
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    ctx = context(data_disk(tmp_path / "disk.vhdx", 2), "vm-error")
    try:
        with pytest.raises(PlatformError) as caught:
            await publish(adapter, ctx)
        assert str(caught.value) == (
            "hv01.lab.example: creating VM vm-error failed: The operation failed because the virtual "
            "switch 'LabSwitch' could not be found. [InvalidParameter,Microsoft.HyperV.PowerShell."
            "Commands.NewVM]")
        assert smb_env.files() == [] and hyperv.vms == {} and ctx.resources == []
        [removal] = hyperv.of("Remove-VM")  # found by name and the task's note: none
        assert removal.parameters == {"Name": "vm-error", "VMId": "", "Notes": "layerbot task t1234abcd"}
    finally:
        await adapter.close()


async def test_an_interrupted_copy_fails_and_leaves_nothing(smb_env: SambaPeer, hyperv: HyperVDouble,
                                                            tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    before = set(smb_env.connections())

    async def progress(fraction: float, note: str) -> None:
        if 0.2 < fraction < 1:  # the server side of the copy's connection dies
            for pid in set(smb_env.connections()) - before:
                os.kill(pid, signal.SIGKILL)

    ctx = context(data_disk(tmp_path / "disk.vhdx", 32), "vm-cut")
    ctx.progress = progress
    try:
        with pytest.raises(RetryableError, match="SMB connection was lost"):
            await publish(adapter, ctx)
        assert smb_env.files() == [] and ctx.resources == []
        assert hyperv.of("New-VM") == []
    finally:
        await adapter.close()


async def test_a_cancel_while_new_vm_runs_still_removes_the_vm_and_the_disk(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    """New-VM goes on in its worker thread after the cancel: the cleanup's Remove-VM waits for
    it (one pipeline at a time per runspace) and finds the VM by name and the task's note."""
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    job: list[asyncio.Future[object]] = []
    loop = asyncio.get_running_loop()

    def cancel_during_new_vm(call: Call) -> None:
        if call.cmdlet == "New-VM":
            loop.call_soon_threadsafe(job[0].cancel)
            time.sleep(0.3)  # New-VM takes a while: the cancel arrives meanwhile

    hyperv.before = cancel_during_new_vm
    ctx = context(data_disk(tmp_path / "disk.vhdx", 2), "vm-cancel")
    job.append(asyncio.ensure_future(publish(adapter, ctx)))
    try:
        with pytest.raises(asyncio.CancelledError):
            await job[0]
        assert [c.cmdlet for c in hyperv.calls] == ["New-VM", "Remove-VM"]
        assert hyperv.vms == {} and smb_env.files() == [] and ctx.resources == []
        [removal] = hyperv.of("Remove-VM")
        assert removal.parameters == {"Name": "vm-cancel", "VMId": "", "Notes": "layerbot task t1234abcd"}
        assert "Remove-VM -VM $vm -Force" in removal.script
        assert ctx.removed == ["Hyper-V VM vm-cancel on hv01.lab.example",
                               f"Hyper-V disk {smb_env.unc}\\vm-cancel.vhdx"]
    finally:
        await adapter.close()


async def test_generation_1_takes_a_vhd_and_sets_no_firmware(smb_env: SambaPeer, hyperv: HyperVDouble,
                                                             tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env, generation=1), short_clients(hyperv))
    assert adapter.disk_format() == "vhd"
    try:
        with pytest.raises(PlatformError, match="generation 1 needs a vhd disk, got vhdx"):
            await publish(adapter, context(data_disk(tmp_path / "d.vhdx", 1), "g1"))
        published = await publish(adapter, context(data_disk(tmp_path / "d.vhd", 1), "g1", "vhd"))
        assert published.expect(HypervPublished).name == "g1"
        assert hyperv.of("New-VM")[0].parameters["Generation"] == 1
        assert hyperv.of("Set-VMFirmware") == [] and smb_env.files() == ["g1.vhd"]
    finally:
        await adapter.close()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"generation": 1, "secure_boot": "MicrosoftWindows"}, "secure_boot 'MicrosoftWindows': generation 1"),
    ({"share": "//hv01/layerbot"}, "share\n  Value error, '//hv01/layerbot' is not a UNC path"),
    ({"share_local_path": "layerbot"}, "share_local_path\n  Value error, 'layerbot' is not an absolute"),
    ({"console_url": "https://wac/{vm}"}, "console_url\n  Value error, 'https://wac/{vm}': only {name}"),
    ({"auth": "basic"}, "auth\n  Input should be 'ntlm', 'kerberos' or 'credssp'"),
    ({"generation": 3}, "generation\n  Input should be 1 or 2"),
    ({"password_env": "LAYERBOT_TEST_UNSET_PW"},
     "environment variable LAYERBOT_TEST_UNSET_PW (password_env)"),
])
def test_bad_settings_are_refused_at_load_naming_key_and_value(
        smb_env: SambaPeer, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        hyperv_config(smb_env, **overrides)
    assert message in str(caught.value)
