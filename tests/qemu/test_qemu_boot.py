"""The proof: a real Debian OS layer published to the qemu target boots, runs the
connector's script once, powers itself off, and the task reaches Done by itself, even though
the runner that published it went away while the guest ran."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapters.qemu import vmfiles
from bot.catalog import load_catalog
from bot.runner.job_runner import JobRunner
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore
from compositor.tools import find_tool
from tests.qemu.conftest import REPO

CATALOG = """\
layers:
  debian: {{kind: os, source: {os_layer}}}
  hello: {{kind: app, source: layers/hello}}
connectors:
  vm:
    type: qemu
    path: ./vms
    memory_mb: 512
    cpus: 2
    accel: {accel}
    scripts: [scripts/{script}]
templates:
  debian-hello:
    os_layer: debian
    app_layers: [hello]
    connector: vm
    disk: {{size_gib: 2}}
runner:
  cache_dir: ./cache
  work_dir: ./work
  watch_timeout: 480
"""

MARKER_SCRIPT = """\
#!/bin/sh
# the connector's script: proves it ran inside the guest, with the app layer's file
cp /opt/hello/hello.txt /var/lib/layerbot-marker
echo "marker written by $(id -un) on $(uname -r)"
"""


POWEROFF_SCRIPT = """\
#!/bin/sh
# the connector's script shuts the guest down itself, as the seed allows
echo "the script powers the guest off"
poweroff
sleep 120
"""
#: The issue: "Under TCG on 2 cores this should take well under 3 minutes".
MAX_BOOT_SECONDS = 180


def _catalog(tmp_path: Path, os_layer: Path, script: str, text: str) -> Path:
    root = tmp_path / "catalog"
    (root / "layers" / "hello" / "opt" / "hello").mkdir(parents=True)
    (root / "layers" / "hello" / "opt" / "hello" / "hello.txt").write_text("hello from the app layer\n")
    (root / "scripts").mkdir()
    (root / "scripts" / script).write_text(text)
    # TCG: the figure CI must meet; LAYERBOT_TEST_ACCEL=auto tries KVM first
    accel = os.environ.get("LAYERBOT_TEST_ACCEL", "tcg")
    (root / "layerbot.yml").write_text(CATALOG.format(os_layer=os_layer, accel=accel, script=script))
    return root / "layerbot.yml"


async def _published(store: TaskStore, task_id: str, work: asyncio.Task[None]) -> None:
    """Wait until the task's VM is published (Action required)."""
    while store.get(task_id).status != states.ACTION_REQUIRED:
        assert not work.done(), store.get(task_id).error
        assert store.get(task_id).status not in (states.FAILED, states.CANCELLED), \
            store.get(task_id).error
        await asyncio.sleep(0.2)


def _raw_copy(vm_dir: Path, tmp_path: Path) -> Path:
    """The VM's disk converted to raw, for debugfs."""
    raw = tmp_path / "after.img"
    raw.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm_dir / "disk.qcow2"), str(raw)],
                   check=True)
    return raw


def _debugfs(raw: Path, path: str) -> str:
    out = subprocess.run([find_tool("debugfs") or "debugfs", "-R", f"cat {path}", f"{raw}?offset=1048576"],
                         capture_output=True, text=True, check=True)
    return out.stdout


def _cli(catalog: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bot.cli.commands import main; sys.argv[0] = 'layerbot'; main()"
    return subprocess.run([sys.executable, "-c", code, "--config", str(catalog), "--db", str(db),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_published_vm_runs_the_scripts_powers_off_and_the_task_is_done(
        debian_os_layer: Path, tmp_path: Path) -> None:
    catalog_file = _catalog(tmp_path, debian_os_layer, "marker.sh", MARKER_SCRIPT)
    root = catalog_file.parent
    catalog = load_catalog(root / "layerbot.yml")
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    task_id = enqueue(store, plan(catalog, "debian-hello"), requested_by="ci")[0].id
    runner = JobRunner(store, catalog, poll_interval=0.1)
    started = time.monotonic()
    work = asyncio.create_task(runner.run(only=[task_id], until_done=True))
    vm_dir = root / "vms"
    try:
        await _published(store, task_id, work)
        published_at = time.monotonic()
        task = store.get(task_id)
        next_steps = [e.message for e in store.events(task_id) if e.kind == "next_steps"]
        assert next_steps[0].startswith(f"The virtual machine {task.image_name} is created, but off.")
        assert f"layerbot vm start {task_id}" in next_steps[0]
        vm_dir = root / "vms" / task.image_name
        assert task.link == (vm_dir / "start.sh").resolve().as_uri()
        assert not (vm_dir / "state.json").exists()  # created, off

        # another process starts it, as an admin would
        result = await asyncio.to_thread(_cli, root / "layerbot.yml", db, "vm", "start", task_id)
        assert result.returncode == 0, result.stdout + result.stderr
        booted_at = time.monotonic()
        # the runner watching it goes away; another one takes the task over from the files
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        assert store.get(task_id).status == states.ACTION_REQUIRED
        second = JobRunner(store, catalog, poll_interval=0.1)
        work = asyncio.create_task(second.run(only=[task_id], until_done=True))
        await asyncio.wait_for(work, 480)
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        if (vm_dir / "vm.json").exists():
            vmfiles.kill_qemu(vm_dir)
    done_at = time.monotonic()
    task = store.get(task_id)
    serial = (vm_dir / "serial.log").read_text(errors="replace")
    assert task.status == states.DONE, f"{task.error}\n{serial[-3000:]}"
    guest = [e.message for e in store.events(task_id) if e.kind == "guest"]
    assert any("powered off" in m for m in guest), guest
    assert [e.kind for e in store.events(task_id)].count("done") == 1

    # the disk afterwards: the marker, the runner's log, the done marker
    raw = _raw_copy(vm_dir, tmp_path)
    assert _debugfs(raw, "/var/lib/layerbot-marker") == "hello from the app layer\n"
    log = _debugfs(raw, "/var/log/layerbot-firstboot.log")
    assert "run /usr/lib/layerbot/scripts/01-marker.sh" in log
    assert "exit 0 after" in log and "marker written by root" in log
    assert "powering off" in log
    assert _debugfs(raw, "/var/lib/layerbot/firstboot.done") is not None
    console = await asyncio.to_thread(_cli, root / "layerbot.yml", db, "vm", "console",
                                      task_id, "--no-follow")
    assert "layerbot: " in console.stdout and "reboot: Power down" in console.stdout
    status = await asyncio.to_thread(_cli, root / "layerbot.yml", db, "vm", "status", task_id)
    assert "off since" in status.stdout and "(guest-shutdown)" in status.stdout
    state = (vm_dir / "state.json").read_text()
    timing = textwrap.dedent(f"""\
        publish (composite + qcow2): {published_at - started:.1f} s
        vm start -> Done: {done_at - booted_at:.1f} s ({state.strip()})""")
    print(timing)
    (tmp_path / "timing.txt").write_text(timing)
    assert done_at - booted_at < MAX_BOOT_SECONDS, timing


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_script_that_powers_the_guest_off_runs_once_and_the_task_is_done(
        debian_os_layer: Path, tmp_path: Path) -> None:
    catalog = load_catalog(_catalog(tmp_path, debian_os_layer, "poweroff.sh", POWEROFF_SCRIPT))
    store = TaskStore(tmp_path / "layerbot.db")
    task_id = enqueue(store, plan(catalog, "debian-hello"), requested_by="ci")[0].id
    work = asyncio.create_task(
        JobRunner(store, catalog, poll_interval=0.1).run(only=[task_id], until_done=True))
    vm_dir = tmp_path / "catalog" / "vms"
    try:
        await _published(store, task_id, work)
        vm_dir = vm_dir / store.get(task_id).image_name
        await asyncio.to_thread(vmfiles.start, vm_dir)
        await asyncio.wait_for(work, 480)
        first_boot = (vm_dir / "serial.log").read_text(errors="replace")
        assert store.get(task_id).status == states.DONE, f"{store.get(task_id).error}\n{first_boot[-3000:]}"
        assert vmfiles.read_state(vm_dir)["reason"] == "guest-shutdown"
        # read now, while the guest's own shutdown left the filesystem clean: after the second
        # boot is killed, debugfs (which does not replay the journal) may read stale blocks
        raw = await asyncio.to_thread(_raw_copy, vm_dir, tmp_path)
        log = _debugfs(raw, "/var/log/layerbot-firstboot.log")
        done_marker = _debugfs(raw, "/var/lib/layerbot/firstboot.done")

        # started again, as an admin would: the guest comes up and stays up, no script runs
        await asyncio.to_thread(vmfiles.start, vm_dir)
        deadline = time.monotonic() + MAX_BOOT_SECONDS
        serial = ""
        while time.monotonic() < deadline:
            state = vmfiles.read_state(vm_dir) or {}
            assert state.get("state") == vmfiles.RUNNING, f"{state}\n{serial[-3000:]}"
            serial = (vm_dir / "serial.log").read_text(errors="replace")
            if "login:" in serial:
                break
            await asyncio.sleep(0.5)
        assert "login:" in serial, serial[-3000:]
        assert "layerbot: " not in serial  # the runner's unit was skipped: done marker
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        if (vm_dir / "vm.json").exists():
            vmfiles.kill_qemu(vm_dir)
    script = "/usr/lib/layerbot/scripts/01-poweroff.sh"
    assert log.count(f"run {script}") == 1, log
    assert log.count("layerbot firstboot: start") == 1, log
    assert "the script powers the guest off" in log
    assert f"stopped by SIGTERM while running {script} (the guest is shutting down)" in log, log
    assert done_marker.endswith(" status interrupted (SIGTERM)\n")
    assert "powering off" not in [line.partition(" ")[2] for line in log.splitlines()]
