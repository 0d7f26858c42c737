"""Publish to vcsim in both modes, and watch the guest power on and off."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import Capability, Published, publish
from adapters.vsphere import (
    Clients,
    VSphereDeployedVm,
    VSphereImport,
    VSpherePoweredOn,
    VSpherePublished,
    VSphereVm,
)
from compositor.sweep import BUILD_PREFIX, owner_prefix

from .conftest import Recorder, VcSim, connector, find_vms, run_task, watching_stub

pytestmark = pytest.mark.timeout(120)


def make_adapter(sim: VcSim, clients: Clients | None = None,
                 **overrides: object):  # type: ignore[no-untyped-def]
    cfg = config_model("vsphere").model_validate(connector(sim, **overrides))
    return create(cfg, clients or Clients(wait_seconds=2))


async def test_publish_vm_then_power_cycle(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    assert adapter.disk_format() == "raw"
    assert Capability.WATCH_POWER in adapter.capabilities
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "win10-office-20261126T0101"))

    [vm] = find_vms(vcsim, "win10-office-20261126T0101")
    assert vm.runtime.powerState == "poweredOff"
    assert not vm.config.template
    disks = [d for d in vm.config.hardware.device if d.__class__.__name__.endswith("VirtualDisk")]
    assert [d.capacityInKB for d in disks] == [64 * 1024]
    about = vcsim.si().content.about
    assert published.link == (
        f"https://{vcsim.host}:{vcsim.port}/ui/app/vm;nav=v/urn:vmomi:VirtualMachine:"
        f"{vm._moId}:{about.instanceUuid}")
    assert published.expect(VSpherePublished).moref == vm._moId
    assert "password" not in repr(published.to_json()).lower()
    recorded = rec.latest(VSphereVm)
    assert recorded is not None and recorded.moref == vm._moId
    assert rec.latest(VSphereImport) is None
    assert rec.progress and rec.progress[-1][0] == pytest.approx(1.0)
    text = adapter.next_steps(published)
    assert text.startswith("The virtual machine win10-office-20261126T0101 is created, but off.")
    assert "the task changes to Done" in text

    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    assert not watch.done()
    run_task(vcsim, vm.PowerOnVM_Task())
    await asyncio.sleep(0.5)
    assert not watch.done()
    run_task(vcsim, vm.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    assert rec.latest(VSpherePoweredOn) == VSpherePoweredOn(moref=vm._moId)
    await adapter.close()


async def test_a_vm_powered_on_before_the_watch_begins_is_announced(
        vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    # the power-on is only in vCenter's events when the watch starts (a quick admin, a
    # restarted bot): the task still says the VM is running and records it
    adapter = make_adapter(vcsim)
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "early-on"))
    [vm] = find_vms(vcsim, "early-on")
    run_task(vcsim, vm.PowerOnVM_Task())
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    async with asyncio.timeout(15):
        while rec.latest(VSpherePoweredOn) != VSpherePoweredOn(moref=vm._moId):
            await asyncio.sleep(0.05)
    assert any(note == "VM early-on is running; waiting for it to shut down"
               for _, note in rec.progress)
    assert not watch.done()
    run_task(vcsim, vm.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    await adapter.close()


async def test_a_power_cycle_right_after_the_events_were_read_is_not_missed(
        vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    # the whole on/off cycle falls just after the watch asked vCenter's events "was it on?"
    cycled: list[bool] = []
    quick: list[Any] = []

    def then_cycle(method: str, result: Any) -> Any:
        if method == "QueryEvent" and quick and not cycled:  # pyVmomi names it so
            cycled.append(True)
            run_task(vcsim, quick[0].PowerOnVM_Task())
            run_task(vcsim, quick[0].PowerOffVM_Task())
        return result

    adapter = make_adapter(vcsim, Clients(connect=watching_stub(then_cycle), wait_seconds=2))
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "quick-guest"))
    [vm] = find_vms(vcsim, "quick-guest")
    quick.append(vm)
    await asyncio.wait_for(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")), 20)
    assert cycled and rec.latest(VSpherePoweredOn) == VSpherePoweredOn(moref=vm._moId)
    await adapter.close()


async def test_publish_template_then_deploy(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    from pyVmomi import vim

    adapter = make_adapter(vcsim, mode="template", vm_template="DC0_C0_RP0_VM0")
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "win10-tpl"))
    [tpl] = find_vms(vcsim, "win10-tpl")
    assert tpl.config.template
    src = find_vms(vcsim, "DC0_C0_RP0_VM0")[0]
    assert tpl.config.hardware.numCPU == src.config.hardware.numCPU
    assert tpl.config.hardware.memoryMB == src.config.hardware.memoryMB
    assert tpl.config.guestId == src.config.guestId
    assert tpl.config.firmware == (src.config.firmware or "efi")
    assert published.summary == "VM template win10-tpl"
    assert adapter.next_steps(published).startswith(
        "Create a VM from the VMware Virtual Machine template win10-tpl and power it on")

    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    pool = find_vms(vcsim, "DC0_C0_RP0_VM0")[0].resourcePool
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False)
    clone = run_task(vcsim, tpl.CloneVM_Task(folder=tpl.parent, name="desk-1", spec=spec))
    clone = vim.VirtualMachine(clone._moId, vcsim.si()._stub)
    await asyncio.sleep(0.5)
    assert not watch.done()
    run_task(vcsim, clone.PowerOnVM_Task())
    run_task(vcsim, clone.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    assert rec.latest(VSphereDeployedVm) == VSphereDeployedVm(moref=clone._moId)
    await adapter.close()


async def test_restart_during_watch(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    first = make_adapter(vcsim)
    rec = Recorder()
    published = await publish(first, rec.context(raw_disk, "restart-me"))
    watch = asyncio.create_task(first.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.3)
    [vm] = find_vms(vcsim, "restart-me")
    run_task(vcsim, vm.PowerOnVM_Task())
    await asyncio.sleep(0.3)
    watch.cancel()  # the bot goes down while the guest runs its scripts
    with pytest.raises(asyncio.CancelledError):
        await watch
    await first.close()
    run_task(vcsim, vm.PowerOffVM_Task())  # ...and the guest shuts down meanwhile

    again = make_adapter(vcsim)
    restored = Published.from_json(published.to_json())
    await asyncio.wait_for(again.wait_for_shutdown(restored, Recorder().context(raw_disk, "x")), 15)
    await again.close()


async def test_restart_template_watch_after_deploy(vcsim: VcSim, vc_env: None,
                                                    raw_disk: Path) -> None:
    from pyVmomi import vim

    first = make_adapter(vcsim, mode="template")
    published = await publish(first, Recorder().context(raw_disk, "tpl-restart"))
    await first.close()  # bot down before watching; the admin deploys meanwhile
    [tpl] = find_vms(vcsim, "tpl-restart")
    pool = find_vms(vcsim, "DC0_C0_RP0_VM0")[0].resourcePool
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False)
    clone = run_task(vcsim, tpl.CloneVM_Task(folder=tpl.parent, name="desk-2", spec=spec))
    clone = vim.VirtualMachine(clone._moId, vcsim.si()._stub)
    run_task(vcsim, clone.PowerOnVM_Task())

    again = make_adapter(vcsim)
    rec = Recorder()
    watch = asyncio.create_task(
        again.wait_for_shutdown(Published.from_json(published.to_json()),
                                rec.context(raw_disk, "x")))
    await asyncio.sleep(1.0)
    assert not watch.done()
    assert rec.latest(VSphereDeployedVm) == VSphereDeployedVm(moref=clone._moId)
    run_task(vcsim, clone.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    await again.close()


async def test_publish_sized_upload(vcsim: VcSim, vc_env: None, raw_disk: Path,
                                    tmp_path: Path) -> None:
    scratch = tmp_path / "work"
    adapter = make_adapter(vcsim, upload="sized", folder="")
    rec = Recorder()
    seen: list[str] = []

    async def look(fraction: float, note: str) -> None:
        if " of " in note:
            seen.extend(p.name for p in scratch.iterdir())

    rec.hooks.append(look)
    ctx = rec.context(raw_disk, "sized")
    ctx.scratch_dir = scratch
    await publish(adapter, ctx)
    assert len(find_vms(vcsim, "sized")) == 1
    # spooled in the runner's work dir under a name sweep_stale can attribute to this process
    assert seen and all(n.startswith(owner_prefix(BUILD_PREFIX)) and n.endswith(".vmdk")
                        for n in seen)
    assert list(scratch.iterdir()) == []  # the temporary VMDK is gone
    assert any("converting" in note for _, note in rec.progress)
    await adapter.close()


async def test_watch_survives_session_expiry(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim)
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "expiring-watch"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    vcsim.si().content.sessionManager.TerminateSession([adapter.session.session_key])
    await asyncio.sleep(2.5)  # the pending WaitForUpdatesEx (2 s) ends; the next one fails
    [vm] = find_vms(vcsim, "expiring-watch")
    run_task(vcsim, vm.PowerOnVM_Task())
    run_task(vcsim, vm.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    assert adapter.session.logins == 2
    await adapter.close()


async def test_disk_file_on_datastore(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    adapter = make_adapter(vcsim, datastore="LocalDS_1")
    await publish(adapter, Recorder().context(raw_disk, "on-disk"))
    [vm] = find_vms(vcsim, "on-disk")
    [disk] = [d for d in vm.config.hardware.device if hasattr(d, "capacityInKB")]
    assert disk.backing.fileName.startswith("[LocalDS_1] on-disk/")
    assert disk.backing.thinProvisioned
    [ds] = vm.datastore
    assert ds.name == "LocalDS_1"
    folder = Path(ds.info.url) / "on-disk"
    assert any(p.suffix == ".vmdk" for p in folder.iterdir())
    await adapter.close()


async def test_cluster_without_drs_gets_a_host(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    """vCenter needs a host for ImportVApp without DRS; vcsim 0.24 cannot turn DRS off."""
    from pyVmomi import vim

    def no_drs(method: str, result: Any) -> Any:
        for item in (result.objects if method == "RetrievePropertiesEx" and result else []):
            for value in item.propSet:
                if value.name == "configurationEx":
                    value.val = vim.cluster.ConfigInfoEx(
                        drsConfig=vim.cluster.DrsConfigInfo(enabled=False))
        return result

    adapter = make_adapter(vcsim, Clients(connect=watching_stub(no_drs), wait_seconds=2))
    await publish(adapter, Recorder().context(raw_disk, "no-drs"))
    [vm] = find_vms(vcsim, "no-drs")
    cluster = vcsim.si().content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0")
    assert vm.runtime.host == cluster.host[0]
    await adapter.close()


async def test_one_session_per_connector(vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    first, second = make_adapter(vcsim), make_adapter(vcsim)
    assert first.session is second.session
    await asyncio.gather(publish(first, Recorder().context(raw_disk, "twin-a")),
                         publish(second, Recorder().context(raw_disk, "twin-b")))
    assert first.session.logins == 1
    assert len(find_vms(vcsim, "twin-a")) == len(find_vms(vcsim, "twin-b")) == 1
    await first.close()
    third = make_adapter(vcsim)
    assert third.session is second.session
    await second.close()
    await third.close()
    assert make_adapter(vcsim).session is not first.session  # the last close logged out


async def test_one_session_per_vcenter_and_user(vcsim: VcSim, vc_env: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import PASSWORD, USER

    monkeypatch.setenv("OTHER_VC_USER", USER)
    monkeypatch.setenv("OTHER_VC_PASSWORD", PASSWORD)
    monkeypatch.setenv("CHANGED_VC_PASSWORD", PASSWORD + "-new")
    first = make_adapter(vcsim)
    # another connector (its own variable names, another folder) to the same vCenter and user
    same_user = make_adapter(vcsim, user_env="OTHER_VC_USER", password_env="OTHER_VC_PASSWORD",
                             folder="", host=vcsim.host.upper())
    other_password = make_adapter(vcsim, password_env="CHANGED_VC_PASSWORD")
    assert same_user.session is first.session
    assert other_password.session is not first.session
    assert PASSWORD not in repr(first._key)
    for adapter in (first, same_user, other_password):
        await adapter.close()


async def test_the_injected_stub_factory_is_the_one_used_and_gets_its_own_session(
        vcsim: VcSim, vc_env: None) -> None:
    methods: list[str] = []

    def record(method: str, result: Any) -> Any:
        methods.append(method)
        return result

    injected = make_adapter(vcsim, Clients(connect=watching_stub(record), wait_seconds=2))
    default = make_adapter(vcsim)
    assert injected.session is not default.session  # another client, another session
    await injected.session.call(lambda si: si.CurrentTime(), "reading the time")
    assert "Login" in methods and "CurrentTime" in methods
    await injected.close()
    await default.close()
