"""The Hyper-V adapter against the Samba peer (the disk) and the PowerShell double (the host)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from adapters.hyperv import HypervPublished, HypervVmRan
from adapters.hyperv import hyperv_scripts as scripts
from adapters.hyperv.hyperv_watch import host_watch
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


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def power_cycle(hyperv: HyperVDouble, name: str, ctx: PublishContext,
                      running: str = "Running", off: str = "Off") -> None:
    """Running until the watch recorded it, then Off."""
    hyperv.set_state(name, running)
    await until(lambda: any(isinstance(r, HypervVmRan) for r in ctx.resources))
    hyperv.set_state(name, off)


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
        await power_cycle(hyperv, "win10-20261201-0101-ab12cd", ctx)
        assert not watch.done()
        await asyncio.wait_for(watch, 10)
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
        for name, ctx in zip(("vm0", "vm1", "vm2"), contexts, strict=True):
            await power_cycle(hyperv, name, ctx)
        await asyncio.wait_for(asyncio.gather(*watches), 10)
    finally:
        for a in adapters:
            await a.close()
    assert clients.pool.shared() == []  # the watch released its share of the runspace


async def test_values_reach_powershell_as_parameters_never_as_script_text(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    disk = data_disk(tmp_path / "disk.vhdx", 1)
    hyperv.switches.add(NASTY)
    adapter = create(hyperv_config(smb_env, switch=NASTY), short_clients(hyperv))
    ctx = context(disk, NASTY)
    try:
        await publish(adapter, ctx)
        [new_vm] = hyperv.of("New-VM")
        assert new_vm.parameters["Name"] == NASTY and new_vm.parameters["SwitchName"] == NASTY
        # the file name on the share keeps only safe characters
        safe = "it_s__quoted___n___Remove-Item_C___-Recurse____env_X_.vhdx"
        assert new_vm.parameters["VHDPath"] == f"{LOCAL_PATH}\\{safe}"
        for call in hyperv.calls:
            assert "Remove-Item" not in call.script and "quoted" not in call.script
            assert call.script.startswith("param(") and "$ErrorActionPreference = 'Stop'" in call.script
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
        assert removal.parameters == {"Name": "vm-error", "VMId": "", "Notes": "layerbot task t1234abcd",
                                      "VHDPath": f"{LOCAL_PATH}\\vm-error.vhdx"}
    finally:
        await adapter.close()


async def test_a_copy_interrupted_once_starts_again_and_the_vm_is_made(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    cut = smb_env.cut_copy_after_first_chunk(adapter.smb)  # type: ignore[attr-defined]
    disk = data_disk(tmp_path / "disk.vhdx", 8)
    ctx = context(disk, "vm-cut")
    try:
        await publish(adapter, ctx)
        assert cut == [1 << 20]  # the first attempt lost its connection after one chunk
        assert smb_env.files() == ["vm-cut.vhdx"]
        assert digest(smb_env.share_dir / "vm-cut.vhdx") == digest(disk)
        assert len(hyperv.of("New-VM")) == 1
    finally:
        await adapter.close()


async def test_a_copy_interrupted_at_every_attempt_fails_and_leaves_nothing(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    real = adapter.smb._copy_sync  # type: ignore[attr-defined]
    attempts: list[int] = []

    def copy_then_lose_the_connection(*args: Any) -> int:
        attempts.append(1)
        real(*args)
        raise ConnectionResetError(104, "Connection reset by peer")

    adapter.smb._copy_sync = copy_then_lose_the_connection  # type: ignore[attr-defined]
    ctx = context(data_disk(tmp_path / "disk.vhdx", 2), "vm-cut")
    try:
        with pytest.raises(RetryableError, match="SMB connection was lost"):
            await publish(adapter, ctx)
        assert len(attempts) == 3  # short_clients' smb_retry
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
        assert removal.parameters == {"Name": "vm-cancel", "VMId": "", "Notes": "layerbot task t1234abcd",
                                      "VHDPath": f"{LOCAL_PATH}\\vm-cancel.vhdx"}
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
    ({"memory_mb": 4095},
     "memory_mb\n  Value error, 4095 is odd: Hyper-V assigns memory in multiples of 2 MB"),
    ({"secure_boot": "Windows"}, "secure_boot\n  Input should be 'MicrosoftWindows', "
                                 "'MicrosoftUEFICertificateAuthority', 'OpenSourceShieldedVM' or 'off'"),
    ({"password_env": "LAYERBOT_TEST_UNSET_PW"},
     "environment variable LAYERBOT_TEST_UNSET_PW (password_env)"),
])
def test_bad_settings_are_refused_at_load_naming_key_and_value(
        smb_env: SambaPeer, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        hyperv_config(smb_env, **overrides)
    assert message in str(caught.value)


async def test_a_task_that_starts_waiting_during_a_round_waits_for_the_next_one(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    """The round in flight did not ask for the new task's VM: its answer is not for that task."""
    clients = short_clients(hyperv)
    adapter = create(hyperv_config(smb_env), clients)
    disk = data_disk(tmp_path / "disk.vhdx", 1)
    in_round, release = threading.Event(), threading.Event()

    def slow_round(call: Call) -> None:
        if call.cmdlet == "Get-VM" and not release.is_set():
            in_round.set()
            release.wait(10)

    try:
        contexts = [context(disk, f"vm{i}") for i in range(2)]
        published = [await publish(adapter, c) for c in contexts]
        hyperv.before = slow_round
        first = asyncio.ensure_future(adapter.wait_for_shutdown(published[0], contexts[0]))
        assert await asyncio.to_thread(in_round.wait, 10)
        second = asyncio.ensure_future(adapter.wait_for_shutdown(published[1], contexts[1]))
        watch = host_watch(adapter.endpoint, clients)
        await until(lambda: watch is not None and len(watch.waiting) == 2)
        release.set()
        await until(lambda: len(hyperv.of("Get-VM")) >= 3)  # the slow round and two more
        assert not first.done() and not second.done()
        await power_cycle(hyperv, "vm1", contexts[1])
        await power_cycle(hyperv, "vm0", contexts[0])
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        release.set()
        await adapter.close()


async def test_a_failing_watch_gives_each_waiting_task_its_own_error(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    disk = data_disk(tmp_path / "disk.vhdx", 1)
    try:
        contexts = [context(disk, f"vm{i}") for i in range(2)]
        published = [await publish(adapter, c) for c in contexts]
        # an answer without State: the watch's own code fails (a KeyError, not an AdapterError)
        monkeypatch.setattr(hyperv, "_get_vm", lambda call: [
            {"VMId": vm_id} for vm_id in call.parameters["VMIds"]])
        results = await asyncio.wait_for(asyncio.gather(
            *(adapter.wait_for_shutdown(p, c) for p, c in zip(published, contexts, strict=True)),
            return_exceptions=True), 10)
        assert all(isinstance(r, PlatformError) for r in results), results
        assert results[0] is not results[1]
        assert str(results[0]) == "hv01.lab.example: watching the VMs failed: 'State' is missing"
    finally:
        await adapter.close()


async def test_running_critical_then_off_critical_is_done(smb_env: SambaPeer, hyperv: HyperVDouble,
                                                          tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    ctx = context(data_disk(tmp_path / "disk.vhdx", 1), "vm-critical")
    try:
        published = await publish(adapter, ctx)
        watch = asyncio.ensure_future(adapter.wait_for_shutdown(published, ctx))
        await power_cycle(hyperv, "vm-critical", ctx, "RunningCritical", "OffCritical")
        await asyncio.wait_for(watch, 10)
    finally:
        await adapter.close()


async def test_a_power_cycle_between_two_rounds_is_seen_by_the_disk_written_since(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    ctx = context(data_disk(tmp_path / "disk.vhdx", 1), "vm-quick")
    try:
        published = await publish(adapter, ctx)
        written = published.expect(HypervPublished).disk_written
        assert written == (smb_env.share_dir / "vm-quick.vhdx").stat().st_mtime
        watch = asyncio.ensure_future(adapter.wait_for_shutdown(published, ctx))
        await until(lambda: len(hyperv.of("Get-VM")) >= 2)
        assert not watch.done()  # Off and not written since: it has not run
        # the guest booted, wrote its disk and shut down between two rounds: never seen Running
        os.utime(smb_env.share_dir / "vm-quick.vhdx", (written + 30, written + 30))
        await asyncio.wait_for(watch, 10)
        assert not any(isinstance(r, HypervVmRan) for r in ctx.resources)
        assert "Get-VMHardDiskDrive" in hyperv.of("Get-VM")[-1].script
    finally:
        await adapter.close()


async def test_a_vm_whose_note_cannot_be_set_is_removed_by_the_create_script(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    hyperv.fail_next["Set-VM"] = PSError("The operation cannot be performed while the object is in use.",
                                         "ObjectInUse,Microsoft.HyperV.PowerShell.Commands.SetVM",
                                         "ResourceBusy")
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    ctx = context(data_disk(tmp_path / "disk.vhdx", 1), "vm-untagged")
    try:
        with pytest.raises(RetryableError, match="the object is in use"):
            await publish(adapter, ctx)
        assert hyperv.vms == {} and smb_env.files() == [] and ctx.resources == []
    finally:
        await adapter.close()


async def test_cleanup_finds_a_vm_without_note_by_this_tasks_disk(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    """New-VM ran, then the connection dropped before Set-VM -Notes: the VM has no note."""
    other = {"Name": "vm-cut", "VMId": "0-other", "State": "Off", "Generation": 2, "Notes": "",
             "VHDPath": f"{LOCAL_PATH}\\someone-else.vhdx"}
    hyperv.vms[other["VMId"]] = other
    hyperv.cut_after_new_vm = True
    adapter = create(hyperv_config(smb_env), short_clients(hyperv))
    ctx = context(data_disk(tmp_path / "disk.vhdx", 1), "vm-cut")
    try:
        with pytest.raises(RetryableError):
            await publish(adapter, ctx)
        assert hyperv.vms == {"0-other": other}  # ours is gone; the other VM's disk is not ours
        assert smb_env.files() == [] and ctx.resources == []
    finally:
        await adapter.close()


@pytest.mark.parametrize(("change", "message"), [
    ({"SwitchName": "NoSuchSwitch"}, 'unable to find a virtual switch with name "NoSuchSwitch"'),
    ({"VHDPath": f"{LOCAL_PATH}\\d.vhd"}, "generation 2 virtual machines require a VHDX"),
    ({"MemoryStartupBytes": 4095 * 2**20}, "must be a multiple of 2 MB"),
])
def test_the_double_refuses_what_hyper_v_refuses(hyperv: HyperVDouble, change: dict[str, Any],
                                                 message: str) -> None:
    (hyperv.share_dir / "d.vhdx").write_bytes(b"x")
    (hyperv.share_dir / "d.vhd").write_bytes(b"x")
    params = {"name": "v", "generation": 2, "memory_bytes": 4096 * 2**20, "vhd_path": f"{LOCAL_PATH}\\d.vhdx",
              "switch": "LabSwitch", "notes": "n"}
    params.update({{"SwitchName": "switch", "VHDPath": "vhd_path", "MemoryStartupBytes": "memory_bytes"}[k]: v
                   for k, v in change.items()})
    ps = scripts.new_vm(**params)  # type: ignore[arg-type]
    result = hyperv.run(ps.text, ps.parameters)
    assert result.failed and message in result.errors[0].message and hyperv.vms == {}
    firmware = scripts.set_secure_boot("some-id", "NoSuchTemplate")
    assert "Cannot find the Secure Boot template 'NoSuchTemplate'" in \
        hyperv.run(firmware.text, firmware.parameters).errors[0].message


async def test_settings_of_the_new_vm_are_tried_again_after_a_dropped_connection(
        smb_env: SambaPeer, hyperv: HyperVDouble, tmp_path: Path) -> None:
    """Set-VMProcessor and Set-VMFirmware can run twice: a connection lost on each is retried
    (New-VM is not: a second one would make a second VM)."""
    dropped: list[str] = []

    def drop_once(call: Call) -> None:
        if call.cmdlet in ("Set-VMProcessor", "Set-VMFirmware") and call.cmdlet not in dropped:
            dropped.append(call.cmdlet)
            raise ConnectionResetError(104, "Connection reset by peer")

    hyperv.before = drop_once
    adapter = create(hyperv_config(smb_env, secure_boot="MicrosoftWindows"), short_clients(hyperv))
    try:
        await publish(adapter, context(data_disk(tmp_path / "disk.vhdx", 2), "vm-retried"))
    finally:
        await adapter.close()
    assert dropped == ["Set-VMProcessor", "Set-VMFirmware"]
    [vm] = hyperv.vms.values()
    assert vm["Count"] == 2 and vm["SecureBootTemplate"] == "MicrosoftWindows"
    assert len(hyperv.of("New-VM")) == 1
