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

from bot.catalog import load_catalog
from bot.runner.job_runner import JobRunner
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore
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


def _run_firstboot(root: Path, bin_dir: Path, *, check: bool = True) -> int:
    """Run the runner as systemd would: in its own process group (a script that "shuts the
    guest down" kills that group, as systemd stopping the unit does, and not pytest)."""
    files, _ = publish_layer((debian_like(root.parent),), "ext4", [], "auto")
    runner = next(f for f in files if f.path == RUNNER)
    env = {**os.environ, "LAYERBOT_ROOT": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", runner.content.decode()], env=env, check=check,
                          timeout=30, capture_output=True, start_new_session=True)
    return done.returncode


def _guest(tmp_path: Path, scripts: dict[str, str], mode: str = "auto") -> tuple[Path, Path]:
    """A guest root with these scripts (all executable) and a bin dir with a stub systemctl
    that records its calls: (root, bin_dir)."""
    root = tmp_path / "guest"
    script_dir = root / "usr" / "lib" / "layerbot" / "scripts"
    script_dir.mkdir(parents=True)
    for name, text in scripts.items():
        (script_dir / name).write_text(text)
        (script_dir / name).chmod(0o755)
    (root / "usr" / "lib" / "layerbot" / "shutdown").write_text(f"{mode}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.calls\n")
    (bin_dir / "systemctl").chmod(0o755)
    return root, bin_dir


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_the_runner_logs_each_script_runs_once_and_powers_off_unless_manual(
        tmp_path: Path, mode: str) -> None:
    root, bin_dir = _guest(tmp_path, {
        "01-ok.sh": f"#!/bin/sh\necho ok >> {tmp_path}/guest/ran\n",
        "02-fails.sh": f"echo failing >> {tmp_path}/guest/ran\nexit 3\n",
    }, mode)
    scripts = root / "usr" / "lib" / "layerbot" / "scripts"
    (scripts / "02-fails.sh").chmod(0o644)  # not executable: run with sh

    _run_firstboot(root, bin_dir)
    _run_firstboot(root, bin_dir)  # the done marker makes the second boot a no-op

    assert (root / "ran").read_text() == "ok\nfailing\n"
    log = (root / "var" / "log" / "layerbot-firstboot.log").read_text()
    assert "exit 0 after " in log and "s: " + str(scripts / "01-ok.sh") in log
    assert f"exit 3 after 0 s: {scripts / '02-fails.sh'}" in log
    assert "finished (status 3)" in log
    assert log.count("layerbot firstboot: start") == 1
    assert (root / "var" / "lib" / "layerbot" / "firstboot.done").read_text().endswith(
        " status 3\n")
    assert not (root / "var" / "lib" / "layerbot" / "firstboot.running").exists()
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


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_script_that_shuts_the_guest_down_is_never_run_again(tmp_path: Path, how: str) -> None:
    # sigterm: systemd stops the unit (SIGTERM to its control group) and the runner's trap
    # logs it; sigkill: the runner dies without a word (power lost, or systemd's SIGKILL)
    kill = "kill -TERM 0\nsleep 10" if how == "sigterm" else "kill -KILL $PPID"
    root, bin_dir = _guest(tmp_path, {
        "01-first.sh": f"#!/bin/sh\necho first >> {tmp_path}/ran\n",
        "02-poweroff.sh": f"#!/bin/sh\necho poweroff >> {tmp_path}/ran\n{kill}\n",
        "03-never.sh": f"#!/bin/sh\necho never >> {tmp_path}/ran\n",
    })
    scripts = root / "usr" / "lib" / "layerbot" / "scripts"
    done = root / "var" / "lib" / "layerbot" / "firstboot.done"
    log_file = root / "var" / "log" / "layerbot-firstboot.log"

    first = _run_firstboot(root, bin_dir, check=False)
    assert first == (143 if how == "sigterm" else -9)
    log = log_file.read_text()
    if how == "sigterm":
        assert (f"stopped by SIGTERM while running {scripts / '02-poweroff.sh'} (the guest is "
                "shutting down); the remaining scripts are not run") in log
        assert "status interrupted (SIGTERM)" in done.read_text()
    else:
        assert not done.exists()
    assert (tmp_path / "ran").read_text() == "first\npoweroff\n"

    # the next boot: nothing runs again, no power-off, the done marker is there
    assert _run_firstboot(root, bin_dir) == 0
    assert _run_firstboot(root, bin_dir) == 0
    assert (tmp_path / "ran").read_text() == "first\npoweroff\n"
    assert not (tmp_path / "systemctl.calls").exists()
    assert done.exists()
    assert not (root / "var" / "lib" / "layerbot" / "firstboot.running").exists()
    log = log_file.read_text()
    assert log.count("layerbot firstboot: start") == 1
    assert "03-never.sh" not in log
    assert "powering off" not in [line.partition(" ")[2] for line in log.splitlines()]
    if how == "sigkill":
        assert (f"the previous run was interrupted while running {scripts / '02-poweroff.sh'} "
                "(a script shut the guest down, or it lost power); not running the scripts "
                "again, not powering off") in log
        assert "status interrupted" in done.read_text()
        assert log.count("interrupted") == 1


def test_a_run_interrupted_before_its_first_script_says_so(tmp_path: Path) -> None:
    root, bin_dir = _guest(tmp_path, {"01-a.sh": f"#!/bin/sh\necho a >> {tmp_path}/ran\n"})
    state = root / "var" / "lib" / "layerbot"
    state.mkdir(parents=True)
    (state / "firstboot.running").write_text("no script yet\n")
    assert _run_firstboot(root, bin_dir) == 0
    assert not (tmp_path / "ran").exists() and (state / "firstboot.done").exists()
    assert "interrupted while running no script yet" in (
        root / "var" / "log" / "layerbot-firstboot.log").read_text()
