"""The qemu target without booting a guest: publish (kernel from /boot, qcow2, definition),
watching through the VM's state files, a real QEMU started and killed, cleanup, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import compositor
from adapters import qemu as qemu_adapter
from adapters.base import (
    GuestTimeoutError,
    PlatformError,
    PublishContext,
    Published,
    clean_up,
    publish,
)
from adapters.qemu import Adapter, Config, QemuVm, vmfiles
from adapters.resources import Resource
from adapters.steps import Outcome
from compositor.spec import BuiltImage, Filesystem, ImageSpec, LayerSource
from tests.conftest import write_tar
from tests.qemu.conftest import REPO

LINUX = {"usr/lib/systemd/systemd": b"\x7fELF", "boot/": None,
         "boot/vmlinuz-6.1.0-9-amd64": b"old kernel", "boot/vmlinuz-6.1.0-10-amd64": b"kernel",
         "boot/initrd.img-6.1.0-10-amd64": b"initrd", "etc/hostname": b"guest\n"}
#: The smallest disk the qemu target accepts: a kernel QEMU loads (zeros: it runs, printing
#: nothing, until killed), no initrd.
TINY = {"boot/": None, "boot/vmlinuz-1": bytes(8192), "etc/hostname": b"x\n"}


async def raw_disk(tmp_path: Path, members: dict[str, bytes | None],
                   filesystem: Filesystem = "ext4") -> BuiltImage:
    layer = write_tar(tmp_path / "os.tar", members)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="raw",
                     filesystem=filesystem)
    return await compositor.build_image(spec, work_dir=tmp_path / "work",
                                        cache_dir=tmp_path / "cache")


class Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.resources: list[Resource] = []
        self.ctx: PublishContext | None = None

    async def progress(self, fraction: float, note: str) -> None:
        self.notes.append(note)

    def context(self, built: BuiltImage | None, *, watch_timeout: float = 30.0,
                task_id: str = "t0000001") -> PublishContext:
        self.ctx = PublishContext(
            task_id=task_id, template="debian", image_name="debian-20261126T010101Z",
            artifact=built.path if built else Path("/nonexistent"),
            artifact_format=built.format if built else "raw",
            virtual_size=built.virtual_size if built else 0, progress=self.progress,
            resources=self.resources, watch_timeout=watch_timeout)
        return self.ctx

    async def cleanup(self, target: Adapter) -> list[str]:
        """What a runner does with the recorded resources after a failure or a crash."""
        assert self.ctx is not None
        return await clean_up(target, self.ctx, Outcome.FAILED)


def adapter(tmp_path: Path, **settings: Any) -> Adapter:
    return Adapter(Config.model_validate({"type": "qemu", "path": tmp_path / "vms", **settings}))


async def test_publish_writes_a_qcow2_and_a_definition_off_with_direct_kernel_boot(
        tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, LINUX)
    rec = Recorder()
    target = adapter(tmp_path, memory_mb=768, cpus=1, accel="tcg")
    published = await publish(target, rec.context(built))

    vm_dir = tmp_path / "vms" / "debian-20261126T010101Z"
    assert rec.resources == [QemuVm(vm_dir=vm_dir, task_id="t0000001")]  # recorded before anything was made
    assert published.link == (vm_dir / "start.sh").resolve().as_uri()
    assert "created, powered off; direct kernel boot" in published.summary
    info = json.loads(subprocess.check_output(
        ["qemu-img", "info", "--output=json", str(vm_dir / "disk.qcow2")]))
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30
    assert (vm_dir / "vmlinuz").read_bytes() == b"kernel"  # the newest kernel
    assert (vm_dir / "initrd.img").read_bytes() == b"initrd"
    vm = vmfiles.VmDefinition.load(vm_dir)
    assert (vm.memory_mb, vm.cpus, vm.accel, vm.task_id) == (768, 1, "tcg", "t0000001")
    assert vm.cmdline is not None and vm.cmdline.startswith("root=PARTUUID=")
    assert vm.cmdline.endswith(" rw console=ttyS0")
    assert vmfiles.read_state(vm_dir) is None  # never started: off
    launcher = (vm_dir / "start.sh").read_text()
    assert os.access(vm_dir / "start.sh", os.X_OK)
    assert "-accel kvm" in launcher.replace(" \\\n  ", " ") and "-no-reboot" in launcher
    assert target.next_steps(published) == (
        "The virtual machine debian-20261126T010101Z is created, but off. Start it with "
        "`layerbot vm start t0000001`, let it run the connector's scripts; it powers off when "
        "done and the task changes to Done. Follow its console with "
        "`layerbot vm console t0000001`.")
    assert any("writing disk.qcow2" in n for n in rec.notes)


@pytest.mark.parametrize(("members", "filesystem", "why"), [
    ({"etc/hostname": b"x\n"}, "ext4", "the OS layer has no /boot/vmlinuz-*: install a kernel"),
    ({"boot/": None, "boot/config-6.1": b"x"}, "ext4", "the OS layer has no /boot/vmlinuz-*"),
    ({"Windows/System32/": None}, "ntfs", "this disk has no Linux partition"),
])
async def test_a_disk_without_a_kernel_is_refused_before_anything_is_made(
        tmp_path: Path, members: dict[str, bytes | None], filesystem: Filesystem, why: str) -> None:
    # no boot loader on layerbot's disk: firmware boot would leave the task waiting 24 h
    built = await raw_disk(tmp_path, members, filesystem)
    rec = Recorder()
    target = adapter(tmp_path)
    with pytest.raises(PlatformError) as failed:
        await publish(target, rec.context(built))
    assert str(failed.value).startswith(
        "the qemu target boots Linux OS layers directly with the kernel in their /boot "
        "(layerbot's disk has no boot loader, so firmware boot cannot work); ")
    assert why in str(failed.value)
    assert rec.resources == []  # nothing recorded, nothing to clean up
    assert not (tmp_path / "vms").exists()


async def test_a_second_publish_in_the_same_second_gets_its_own_vm(tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, TINY)
    first = await publish(adapter(tmp_path), Recorder().context(built))
    second = await publish(adapter(tmp_path), Recorder().context(built, task_id="t0000002"))
    assert first.expect(QemuVm).vm_dir.name == "debian-20261126T010101Z"
    assert second.expect(QemuVm).vm_dir.name == "debian-20261126T010101Z-t0000002"
    assert vmfiles.VmDefinition.load(second.expect(QemuVm).vm_dir).task_id == "t0000002"


async def test_a_failed_conversion_leaves_nothing_after_cleanup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = await raw_disk(tmp_path, TINY)
    failing = tmp_path / "qemu-img"
    failing.write_text("#!/bin/sh\necho 'qemu-img: Could not open the disk' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(qemu_adapter, "_qemu_img", lambda: str(failing))
    rec = Recorder()
    target = adapter(tmp_path)
    ctx = rec.context(built)
    with pytest.raises(PlatformError, match="qemu-img convert failed: qemu-img: Could not open"):
        await publish(target, ctx)
    # the publish's own step undid it
    assert ctx.removed == [f"VM directory {tmp_path / 'vms' / 'debian-20261126T010101Z'}"]
    assert not list((tmp_path / "vms").iterdir())
    assert rec.resources == [] and await rec.cleanup(target) == []
    assert await target.remove(QemuVm(vm_dir=tmp_path / "vms" / "gone")) == []  # idempotent


async def test_watch_follows_the_state_files_and_survives_a_new_adapter(tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, TINY)
    published = await publish(adapter(tmp_path), Recorder().context(built))
    vm_dir = published.expect(QemuVm).vm_dir
    rec = Recorder()
    # a restarted runner has only the stored JSON
    resumed = Published.from_json(json.loads(json.dumps(published.to_json())))
    watch = asyncio.create_task(adapter(tmp_path).wait_for_shutdown(resumed, rec.context(built)))
    await asyncio.sleep(0.7)
    assert not watch.done()
    vmfiles.write_state(vm_dir, vmfiles.RUNNING, accel="tcg", started_at=time.time())
    await asyncio.sleep(0.7)
    assert not watch.done()
    vmfiles.write_state(vm_dir, vmfiles.STOPPED, reason="guest-reset")
    await asyncio.sleep(0.7)
    assert not watch.done()  # a restart is not the end: start it again
    now = time.time()
    vmfiles.write_state(vm_dir, vmfiles.OFF, reason="guest-shutdown", started_at=now - 42,
                        stopped_at=now)
    await asyncio.wait_for(watch, 5)
    assert rec.notes == [
        "the VM is running (tcg); waiting for the guest to power off",
        "the VM stopped without a guest power-off (guest-reset); start it again with "
        "`layerbot vm start t0000001`",
        "the guest ran its scripts and powered off (42 s after start)",
    ]


async def test_watch_times_out(tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, TINY)
    rec = Recorder()
    target = adapter(tmp_path)
    published = await publish(target, rec.context(built))
    with pytest.raises(GuestTimeoutError, match="did not power off within 1 s") as raised:
        await target.wait_for_shutdown(published, rec.context(built, watch_timeout=1))
    assert not raised.value.retryable  # a retry would spend the whole wait again


async def test_a_taken_over_watch_keeps_the_deadline_of_the_publish(tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, TINY)
    rec = Recorder()
    target = adapter(tmp_path)
    published = await publish(target, rec.context(built))
    vm = published.expect(QemuVm)
    assert vm.published_at is not None and abs(vm.published_at - time.time()) < 60
    # another runner resumes the watch an hour after the publish, with a 10 min watch_timeout
    resumed = Published.from_json(published.to_json(), where="test")
    resumed.resource = vm.model_copy(update={"published_at": time.time() - 3600})
    with pytest.raises(GuestTimeoutError, match="within 600 s"):
        await asyncio.wait_for(
            target.wait_for_shutdown(resumed, rec.context(built, watch_timeout=600)), 5)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bot.cli.commands import main; sys.argv[0] = 'layerbot'; main()"
    return subprocess.run([sys.executable, "-c", code, "--db", str(tmp_path / "t.db"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


async def small_published_vm(tmp_path: Path) -> tuple[Recorder, Any, Path]:
    """A tiny disk published to a TCG qemu target: (recorder, adapter, VM directory)."""
    built = await raw_disk(tmp_path, TINY)
    rec = Recorder()
    target = adapter(tmp_path, accel="tcg", memory_mb=128, cpus=1)
    published = await publish(target, rec.context(built))
    return rec, target, published.expect(QemuVm).vm_dir


async def test_a_real_qemu_started_then_killed_is_stopped_not_done(tmp_path: Path) -> None:
    _, _, vm_dir = await small_published_vm(tmp_path)
    try:
        state = await asyncio.to_thread(vmfiles.start, vm_dir)
        assert state["state"] == vmfiles.RUNNING and state["accel"] == "tcg"
        pid = vmfiles.qemu_pid(vm_dir)
        assert pid is not None
        with pytest.raises(PlatformError, match="already running"):
            vmfiles.start(vm_dir)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if (vmfiles.read_state(vm_dir) or {}).get("state") == vmfiles.STOPPED:
                break
            await asyncio.sleep(0.1)
        assert vmfiles.read_state(vm_dir)["reason"].startswith("QEMU exited without a shutdown")
        events = [json.loads(line)["event"]
                  for line in (vm_dir / "events.jsonl").read_text().splitlines()]
        assert events[0] == "RESUME"
    finally:
        vmfiles.kill_qemu(vm_dir)


async def test_cleanup_of_a_half_made_vm_stops_its_qemu(tmp_path: Path) -> None:
    rec, target, vm_dir = await small_published_vm(tmp_path)
    try:
        await asyncio.to_thread(vmfiles.start, vm_dir)
        pid = vmfiles.qemu_pid(vm_dir)
        assert pid is not None
        assert await rec.cleanup(target) == [f"VM directory {vm_dir}"]
        assert not vm_dir.exists()
        assert not Path(f"/proc/{pid}").exists() or b"qemu" not in Path(
            f"/proc/{pid}/cmdline").read_bytes()
    finally:
        if vm_dir.exists():
            vmfiles.kill_qemu(vm_dir)


def test_a_qemu_that_cannot_start_is_reported(tmp_path: Path) -> None:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    vm = vmfiles.VmDefinition(name="broken", task_id="t1", memory_mb=128, cpus=1, accel="tcg",
                              qemu=sys.executable,  # not a QEMU: exits with an error
                              kernel="vmlinuz", cmdline="console=ttyS0")
    vmfiles.write_definition(vm, vm_dir)
    with pytest.raises(PlatformError, match="VM broken did not start: "):
        vmfiles.start(vm_dir, timeout=30)
    assert vmfiles.read_state(vm_dir)["state"] == vmfiles.FAILED
    vm.qemu = "qemu-system-nonexistent"
    vmfiles.write_definition(vm, vm_dir)
    with pytest.raises(PlatformError, match="qemu-system-nonexistent is not installed; install "
                                            "it with: sudo apt-get install qemu-system-x86"):
        vmfiles.start(vm_dir, timeout=30)


def test_vm_commands_need_a_task_published_to_qemu(tmp_path: Path) -> None:
    from bot.store.task_store import TaskStore

    store = TaskStore(tmp_path / "t.db")
    task, _ = store.create_task(template="demo", connector="folder", platform="Local folder",
                                image_name="demo-1", requested_by="ci", message="queued",
                                idempotency_key="k1")
    store.close()
    result = _cli(tmp_path, "vm", "start", "t-nope")
    assert result.returncode == 2 and "t-nope" in result.stderr
    result = _cli(tmp_path, "vm", "status", task.id)
    assert result.returncode == 2 and "has no QEMU VM" in result.stderr


def test_a_vm_published_for_firmware_boot_by_an_older_version_says_publish_again(
        tmp_path: Path) -> None:
    (tmp_path / vmfiles.DEFINITION).write_text(json.dumps({
        "name": "old", "task_id": "t1", "memory_mb": 128, "cpus": 1, "accel": "tcg",
        "qemu": "qemu-system-x86_64", "disk": "disk.qcow2", "disk_bus": "sata",
        "kernel": None, "initrd": None, "cmdline": None}))
    with pytest.raises(PlatformError) as failed:
        vmfiles.VmDefinition.load(tmp_path)
    assert "older layerbot for firmware boot" in str(failed.value)
    assert str(failed.value).endswith("publish the template again")


async def test_an_existing_foreign_vm_directory_fails_the_publish_and_is_left_untouched(
        tmp_path: Path) -> None:
    built = await raw_disk(tmp_path, TINY)
    vms = tmp_path / "vms"
    # both names the publish may take are someone else's folders (created meanwhile)
    foreign = [vms / "debian-20261126T010101Z", vms / "debian-20261126T010101Z-t0000001"]
    for folder in foreign:
        folder.mkdir(parents=True)
        (folder / "theirs.txt").write_text("keep me")
    rec = Recorder()
    target = adapter(tmp_path)
    with pytest.raises(PlatformError, match="already exists"):
        await publish(target, rec.context(built))
    await rec.cleanup(target)  # what a runner does after the failure, and after a crash
    for folder in foreign:
        assert (folder / "theirs.txt").read_text() == "keep me"


async def test_cleanup_removes_only_a_vm_directory_with_the_tasks_marker_or_an_empty_one(
        tmp_path: Path) -> None:
    target = adapter(tmp_path)
    other = tmp_path / "other"
    vmfiles.create_owned_dir(other, "t0000002")
    (other / vmfiles.DISK).write_bytes(b"disk")
    assert await target.remove(QemuVm(vm_dir=other, task_id="t0000001")) == []
    assert (other / vmfiles.DISK).exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # the runner died between mkdir and the marker
    assert await target.remove(QemuVm(vm_dir=empty, task_id="t0000001")) == [
        f"VM directory {empty}"]
    half_marked = tmp_path / "half-marked"
    half_marked.mkdir()
    (half_marked / vmfiles.OWNER).touch()  # ... or between creating the marker and writing it
    assert await target.remove(QemuVm(vm_dir=half_marked, task_id="t0000001")) == [
        f"VM directory {half_marked}"]
    assert not half_marked.exists()
    theirs_half_marked = tmp_path / "theirs-half-marked"
    theirs_half_marked.mkdir()
    (theirs_half_marked / vmfiles.OWNER).touch()
    (theirs_half_marked / "notes.txt").write_text("not layerbot's")
    assert await target.remove(QemuVm(vm_dir=theirs_half_marked, task_id="t0000001")) == []
    ours = tmp_path / "ours"
    vmfiles.create_owned_dir(ours, "t0000001")
    (ours / vmfiles.DISK).write_bytes(b"disk")
    assert await target.remove(QemuVm(vm_dir=ours, task_id="t0000001")) == [f"VM directory {ours}"]
    assert not ours.exists()


async def test_cleanup_stops_a_qemu_img_its_killed_runner_left_converting(tmp_path: Path) -> None:
    # a runner SIGKILLed mid-upload: its qemu-img goes on converting into the VM folder
    target = adapter(tmp_path)
    vm_dir = tmp_path / "vms" / "plain-1"
    vm_dir.parent.mkdir()
    vmfiles.create_owned_dir(vm_dir, "t0000001")
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(8 << 20))
    convert = subprocess.Popen(["qemu-img", "convert", "-r", "64K", "-f", "raw", "-O", "qcow2",
                                str(source), str(vm_dir / vmfiles.PARTIAL_DISK)])
    try:
        while not (vm_dir / vmfiles.PARTIAL_DISK).exists():
            assert convert.poll() is None
            await asyncio.sleep(0.05)
        assert await target.remove(QemuVm(vm_dir=vm_dir, task_id="t0000001")) == [
            f"VM directory {vm_dir}"]
        assert convert.wait(timeout=5) == -signal.SIGKILL  # not left writing for minutes
        assert not vm_dir.exists()
    finally:
        convert.kill()
        convert.wait()
