"""The Linux publish layer: the first-boot runner, its systemd unit, and the publish error
when the layers do not show how the guest boots."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bot import states
from bot.catalog import load_catalog
from bot.runner import JobRunner
from bot.store import TaskStore
from bot.summary import enqueue, plan
from compositor.firstboot import RUNNER, SHUTDOWN_FILE, UNIT, UNIT_LINK, publish_layer
from compositor.guestos import GuestOSError
from compositor.spec import ExtraFile, LayerSource
from tests.conftest import write_tar


def tar_layer(path: Path, members: dict[str, bytes | None], links: dict[str, str]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def debian_like(tmp_path: Path, init_target: str = "../lib/systemd/systemd") -> LayerSource:
    layer = tar_layer(tmp_path / "os.tar", {
        "usr/": None, "usr/lib/": None, "usr/lib/systemd/": None,
        "usr/lib/systemd/systemd": b"\x7fELF", "usr/sbin/": None,
        "boot/": None, "boot/vmlinuz-6.1.0-1-amd64": b"kernel",
    }, {"usr/sbin/init": init_target, "sbin": "usr/sbin", "lib": "usr/lib"})
    return LayerSource("debian", "os", layer)


def test_systemd_guest_gets_the_runner_and_the_enabled_unit(tmp_path: Path) -> None:
    script = tmp_path / "kms.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    files, links = publish_layer((debian_like(tmp_path),), "ext4", [script], "auto")
    by_path = {f.path: f for f in files}
    assert by_path[RUNNER].mode == 0o755
    assert by_path[SHUTDOWN_FILE].content == b"auto\n"
    assert by_path["/usr/lib/layerbot/scripts/01-kms.sh"].content == script.read_bytes()
    unit = by_path[UNIT].content.decode()
    assert "ExecStart=/usr/lib/layerbot/firstboot" in unit
    assert "ConditionPathExists=!/var/lib/layerbot/firstboot.done" in unit
    assert links == ((UNIT_LINK, UNIT),)
    assert UNIT_LINK.endswith("multi-user.target.wants/layerbot-firstboot.service")


@pytest.mark.parametrize(("init", "message"), [
    ("/bin/busybox", "boots with BusyBox init"),
    ("/sbin/openrc-init", "boots with OpenRC"),
])
def test_other_init_systems_are_a_publish_error(tmp_path: Path, init: str, message: str) -> None:
    layer = tar_layer(tmp_path / "os.tar", {"boot/vmlinuz-5": b"k"}, {"sbin/init": init})
    with pytest.raises(GuestOSError, match=message):
        publish_layer((LayerSource("alpine", "os", layer),), "ext4", [], "auto")


def test_sysv_init_is_a_publish_error(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar", {"sbin/init": b"\x7fELF", "etc/inittab": b"id:2:\n"})
    with pytest.raises(GuestOSError, match="SysV init"):
        publish_layer((LayerSource("old", "os", layer),), "ext4", [], "auto")


def test_a_kernel_without_an_init_cannot_tell_how_it_boots(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar", {"boot/vmlinuz-6.1": b"kernel"})
    with pytest.raises(GuestOSError, match="cannot tell how the OS layer boots"):
        publish_layer((LayerSource("odd", "os", layer),), "ext4", [], "auto")


def test_an_app_layer_whiteout_of_systemd_is_seen(tmp_path: Path) -> None:
    os_layer = LayerSource("os", "os", write_tar(tmp_path / "os.tar", {
        "usr/lib/systemd/systemd": b"\x7fELF", "boot/vmlinuz-6.1": b"kernel"}))
    publish_layer((os_layer,), "ext4", [], "auto")  # systemd, no /sbin/init: fine
    apps = tmp_path / "app"
    (apps / "usr" / "lib" / "systemd").mkdir(parents=True)
    (apps / "usr" / "lib" / "systemd" / ".wh.systemd").touch()
    with pytest.raises(GuestOSError, match="cannot tell how the OS layer boots"):
        publish_layer((os_layer, LayerSource("app", "app", apps)), "ext4", [], "auto")


def test_content_only_layers_pass(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar", {"etc/os-release": b"ID=test\n"})
    files, _ = publish_layer((LayerSource("files", "os", layer),), "ext4", [], "manual")
    assert ExtraFile(SHUTDOWN_FILE, b"manual\n", 0o644) in files


def _run_firstboot(root: Path, bin_dir: Path) -> None:
    files, _ = publish_layer((debian_like(root.parent),), "ext4", [], "auto")
    runner = next(f for f in files if f.path == RUNNER)
    env = {**os.environ, "LAYERBOT_ROOT": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", runner.content.decode()], env=env, check=True, timeout=30,
                   capture_output=True)


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_the_runner_logs_each_script_runs_once_and_powers_off_unless_manual(
        tmp_path: Path, mode: str) -> None:
    root = tmp_path / "guest"
    scripts = root / "usr" / "lib" / "layerbot" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "01-ok.sh").write_text(f"#!/bin/sh\necho ok >> {root}/ran\n")
    (scripts / "01-ok.sh").chmod(0o755)
    (scripts / "02-fails.sh").write_text(f"echo failing >> {root}/ran\nexit 3\n")  # not executable
    (root / "usr" / "lib" / "layerbot" / "shutdown").write_text(f"{mode}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.calls\n")
    (bin_dir / "systemctl").chmod(0o755)

    _run_firstboot(root, bin_dir)
    _run_firstboot(root, bin_dir)  # the done marker makes the second boot a no-op

    assert (root / "ran").read_text() == "ok\nfailing\n"
    log = (root / "var" / "log" / "layerbot-firstboot.log").read_text()
    assert "exit 0 after " in log and "s: " + str(scripts / "01-ok.sh") in log
    assert f"exit 3 after 0 s: {scripts / '02-fails.sh'}" in log
    assert "finished (status 3)" in log
    assert log.count("layerbot firstboot: start") == 1
    assert (root / "var" / "lib" / "layerbot" / "firstboot.done").exists()
    calls = tmp_path / "systemctl.calls"
    if mode == "auto":
        assert calls.read_text() == "--no-block poweroff\n"
        assert "powering off" in log
    else:
        assert not calls.exists()
        assert "shutdown: manual" in log


async def test_a_task_whose_os_layer_does_not_boot_with_systemd_fails_with_the_reason(
        tmp_path: Path) -> None:
    tar_layer(tmp_path / "alpine.tar", {"boot/vmlinuz-lts": b"k"}, {"sbin/init": "/bin/busybox"})
    (tmp_path / "layerbot.yml").write_text(
        "layers:\n  alpine: {kind: os, source: alpine.tar}\n"
        "connectors:\n  vm: {type: qemu, path: ./vms}\n"
        "templates:\n  alpine: {os_layer: alpine, connector: vm, disk: {size_gib: 1}}\n")
    catalog = load_catalog(tmp_path / "layerbot.yml")
    store = TaskStore(tmp_path / "t.db")
    task_id = enqueue(store, plan(catalog, "alpine"), requested_by="ci")[0].id
    runner = JobRunner(store, catalog, poll_interval=0.05)
    await asyncio.wait_for(runner.run(only=[task_id], until_done=True), 60)
    task = store.get(task_id)
    store.close()
    assert task.status == states.FAILED
    assert task.error == ("the OS layer boots with BusyBox init (/sbin/init -> /bin/busybox); "
                          "layerbot's first-boot runner needs systemd")
    assert not (tmp_path / "vms").exists()
