"""The qemu target end to end with a guest that powers itself off at once
(tests/qemu/poweroff_guest.py): publish, `layerbot vm start`'s start, the monitor's real QMP
events, and the watch returning on the guest's own power-off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from adapters.base import publish
from adapters.qemu import QemuVm, vmfiles
from tests.qemu.poweroff_guest import BANNER, os_layer_members
from tests.qemu.test_qemu_adapter import Recorder, adapter, raw_disk


async def test_a_guest_that_powers_itself_off_ends_the_watch(tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, os_layer_members())
    rec = Recorder()
    target = adapter(tmp_path, accel="tcg", memory_mb=128, cpus=1)
    published = await publish(target, rec.context(built))
    vm_dir = published.expect(QemuVm).vm_dir
    try:
        watch = asyncio.create_task(target.wait_for_shutdown(published, rec.context(built)))
        await asyncio.to_thread(vmfiles.start, vm_dir)
        await asyncio.wait_for(watch, 30)
    finally:
        vmfiles.kill_qemu(vm_dir)
    state = vmfiles.read_state(vm_dir)
    assert state is not None and (state["state"], state["reason"]) == (vmfiles.OFF, "guest-shutdown")
    shutdowns = [e for e in map(json.loads, (vm_dir / vmfiles.EVENTS).read_text().splitlines())
                 if e.get("event") == "SHUTDOWN"]
    assert [s["data"] for s in shutdowns] == [{"guest": True, "reason": "guest-shutdown"}]
    assert BANNER.strip() in (vm_dir / vmfiles.SERIAL_LOG).read_bytes()
    assert vmfiles.qemu_pid(vm_dir) is None
    assert rec.notes[-1].startswith("the guest ran its scripts and powered off")
