"""Windows guests: NTFS built with mkntfs + wimlib (no root, no FUSE), the first-boot runner
hooked into kmssetup.cmd or the SOFTWARE hive's RunOnce; read back with ntfsls, ntfscat and
hivexget. Windows itself cannot be booted here."""

from __future__ import annotations

import filecmp
import os
import subprocess
import time
from pathlib import Path

import pytest

import compositor
from compositor.firstboot import (
    KMS_HOOK,
    RUN_ONCE_COMMAND,
    hook_kmssetup,
    publish_layer,
    windows_runner,
)
from compositor.guestos import GuestOSError
from compositor.identity import DiskIdentity
from compositor.spec import BuiltImage, ImageSpec, LayerSource
from compositor.tools import find_tool
from compositor.winreg import RUN_ONCE, get_value, set_value
from tests.conftest import write_tar
from tests.windows.hive import empty_hive

PARTITION_OFFSET = 1 << 20
KMSSETUP = b"@echo off\r\ncscript //nologo %windir%\\system32\\slmgr.vbs /ato\r\nexit /b 0\r\n"


def windows_os(root: Path, *, kmssetup: bytes | None = None, hive: bytes | None = None) -> Path:
    os_dir = root / "win-os"
    (os_dir / "Windows" / "System32" / "config").mkdir(parents=True)
    (os_dir / "Windows" / "System32" / "cmd.exe").write_bytes(b"MZ not really cmd.exe")
    (os_dir / "Windows" / "System32" / "config" / "SOFTWARE").write_bytes(hive or empty_hive())
    if kmssetup is not None:
        kms = os_dir / "Windows" / "Setup" / "Scripts" / "kmsdir"
        kms.mkdir(parents=True)
        (kms / "kmssetup.cmd").write_bytes(kmssetup)
    return os_dir


def app_layer(root: Path) -> Path:
    return write_tar(root / "app.tar", {
        "Program Files/": None, "Program Files/Notepad++/": None,
        "Program Files/Notepad++/notepad++.txt": b"an app layer file\n",
    })


def script(root: Path, name: str = "activate.cmd") -> Path:
    path = root / name
    path.write_bytes(b"@echo off\r\necho activated\r\n")
    return path


async def build(root: Path, layers: tuple[LayerSource, ...], scripts: list[Path],
                shutdown: str = "auto") -> tuple[BuiltImage, Path]:
    files, links = publish_layer(layers, "ntfs", scripts, shutdown)  # type: ignore[arg-type]
    spec = ImageSpec(layers=layers, size_gib=1, format="raw", filesystem="ntfs",
                     extra_files=files, extra_symlinks=links)
    built = await compositor.build_image(spec, work_dir=root / "work", cache_dir=root / "cache")
    volume = root / "volume.img"
    subprocess.run(["dd", f"if={built.path}", f"of={volume}", "bs=1M", "skip=1", "conv=sparse",
                    "status=none"], check=True)
    return built, volume


def ntfscat(volume: Path, path: str) -> bytes:
    return subprocess.run(["ntfscat", str(volume), path], capture_output=True, check=True).stdout


def ntfsls(volume: Path, path: str) -> list[str]:
    out = subprocess.run(["ntfsls", "-p", path, str(volume)], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line for line in out.splitlines() if line not in (".", ".."))


async def test_ntfs_image_without_kmssetup_gets_a_run_once_value(tmp_path: Path) -> None:
    layers = (LayerSource("win10", "os", windows_os(tmp_path)),
              LayerSource("notepad", "app", app_layer(tmp_path)))
    built, volume = await build(tmp_path, layers, [script(tmp_path), script(tmp_path, "b.ps1")])

    parts = subprocess.run([find_tool("sgdisk") or "sgdisk", "-p", str(built.path)],
                           capture_output=True, text=True, check=True).stdout
    assert "0700  Windows" in parts  # Microsoft basic data
    info = subprocess.run(["ntfsinfo", "-m", str(volume)], capture_output=True, text=True,
                          check=True).stdout
    assert "Windows" in info  # the volume label
    assert ntfsls(volume, "/") == ["Program Files", "Windows"]
    assert ntfscat(volume, "/Program Files/Notepad++/notepad++.txt") == b"an app layer file\n"
    assert ntfsls(volume, "/Windows/Setup/Scripts/layerbot") == [
        "01-activate.cmd", "02-b.ps1", "firstboot.cmd"]
    runner = ntfscat(volume, "/Windows/Setup/Scripts/layerbot/firstboot.cmd")
    assert b'set "SHUTDOWN_MODE=auto"\r\n' in runner
    assert b"shutdown /s /t 0\r\n" in runner
    assert b"%SystemRoot%\\Temp\\layerbot-firstboot.log" in runner
    assert b"\n" not in runner.replace(b"\r\n", b"")  # CRLF throughout
    # no ACLs in the layers: NTFS defaults, owner Administrators, Everyone full control
    security = subprocess.run(["ntfsinfo", "-F", "/Windows/Setup/Scripts/layerbot/firstboot.cmd",
                               str(volume)], capture_output=True, text=True, check=True).stdout
    assert "Owner SID:\t\t S-1-5-32-544" in security
    assert "access:0x1f01ff" in security and "SID: S-1-1-0" in security

    hive = ntfscat(volume, "/Windows/System32/config/SOFTWARE")
    assert get_value(hive, RUN_ONCE, "layerbot-firstboot") == RUN_ONCE_COMMAND
    assert RUN_ONCE_COMMAND == (r'C:\Windows\System32\cmd.exe /c '
                                r'"C:\Windows\Setup\Scripts\layerbot\firstboot.cmd"')
    hive_file = tmp_path / "SOFTWARE"
    hive_file.write_bytes(hive)
    listing = subprocess.run(["hivexget", str(hive_file), "\\" + RUN_ONCE], capture_output=True,
                             text=True, check=True).stdout
    assert listing.startswith('"layerbot-firstboot"=')


async def test_kmssetup_is_hooked_after_activation_and_the_hive_is_left_alone(
        tmp_path: Path) -> None:
    hive = empty_hive()
    layers = (LayerSource("win10", "os", windows_os(tmp_path, kmssetup=KMSSETUP, hive=hive)),)
    _, volume = await build(tmp_path, layers, [script(tmp_path)], shutdown="manual")

    kms = ntfscat(volume, "/Windows/Setup/Scripts/kmsdir/kmssetup.cmd")
    activation = kms.index(b"slmgr.vbs /ato")
    hook = kms.index(b'call "%SystemRoot%\\Setup\\Scripts\\layerbot\\firstboot.cmd"')
    assert activation < hook < kms.index(b"exit /b 0")
    assert ntfscat(volume, "/Windows/System32/config/SOFTWARE") == hive
    runner = ntfscat(volume, "/Windows/Setup/Scripts/layerbot/firstboot.cmd")
    assert b'set "SHUTDOWN_MODE=manual"' in runner


def test_kms_hook_goes_before_a_final_exit_and_is_added_once() -> None:
    plain = b"cscript slmgr.vbs /ato\n"
    assert hook_kmssetup(plain) == plain + KMS_HOOK.replace("\r\n", "\n").encode()
    hooked = hook_kmssetup(b"slmgr /ato\r\n\r\nEXIT\r\n")
    assert hooked.endswith(KMS_HOOK.encode() + b"EXIT\r\n")
    assert hook_kmssetup(hooked) == hooked


def test_run_once_keeps_the_values_already_there() -> None:
    hive = set_value(empty_hive(), RUN_ONCE, "Office", r"C:\Program Files\Office\setup.exe /q")
    hive = set_value(hive, RUN_ONCE, "layerbot-firstboot", "old")
    hive = set_value(hive, RUN_ONCE, "layerbot-firstboot", RUN_ONCE_COMMAND)
    assert get_value(hive, RUN_ONCE, "Office") == r"C:\Program Files\Office\setup.exe /q"
    assert get_value(hive, RUN_ONCE, "layerbot-firstboot") == RUN_ONCE_COMMAND
    assert get_value(hive, r"Microsoft\Windows\CurrentVersion\Run", "x") is None


def test_ntfs_template_without_windows_is_a_clear_error(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "linux.tar", {"etc/": None, "etc/os-release": b"ID=debian\n"})
    with pytest.raises(GuestOSError, match=r"no Windows\\System32"):
        publish_layer((LayerSource("debian", "os", layer),), "ntfs", [], "auto")


def test_windows_without_kmssetup_or_hive_is_a_clear_error(tmp_path: Path) -> None:
    os_dir = windows_os(tmp_path)
    (os_dir / "Windows" / "System32" / "config" / "SOFTWARE").unlink()
    with pytest.raises(GuestOSError, match=r"neither .*kmssetup\.cmd nor a SOFTWARE registry hive"):
        publish_layer((LayerSource("win", "os", os_dir),), "ntfs", [], "auto")


def test_windows_os_layer_on_ext4_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GuestOSError, match=r"set disk\.filesystem: ntfs"):
        publish_layer((LayerSource("win", "os", windows_os(tmp_path)),), "ext4", [], "auto")


def test_a_tar_os_layer_is_matched_case_insensitively_and_keeps_its_spelling(
        tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "win.tar.gz", {
        "WINDOWS/": None, "WINDOWS/system32/": None, "WINDOWS/system32/CONFIG/": None,
        "WINDOWS/system32/CONFIG/software": empty_hive(),
        "WINDOWS/setup/scripts/KMSDIR/KmsSetup.cmd": KMSSETUP,
        **{f"WINDOWS/WinSxS/pkg{i}/file.dll": b"x" for i in range(200)},
    }, compression="gz")
    files, _ = publish_layer((LayerSource("win", "os", layer),), "ntfs", [], "auto")
    hooked = next(f for f in files if f.path.lower().endswith("kmssetup.cmd"))
    assert hooked.path == "/WINDOWS/setup/scripts/KMSDIR/KmsSetup.cmd"
    assert hooked.content == hook_kmssetup(KMSSETUP)
    assert not any(f.path.lower().endswith("software") for f in files)  # kmssetup wins


def test_the_runner_never_runs_the_scripts_twice_even_when_one_shuts_windows_down() -> None:
    # Windows cannot be booted here: the order of the runner's steps is what is checked
    text = windows_runner("auto").decode()
    lines = text.split("\r\n")

    def at(line: str) -> int:
        return lines.index(line)

    done_check, running_check = at('if exist "%DONE%" exit /b 0'), \
        at('if exist "%RUNNING%" goto :interrupted')
    start, first = at(">> \"%LOG%\" echo %DATE% %TIME% layerbot firstboot: start"), \
        at('for %%S in ("%LB%\\??-*") do call :run "%%~fS"')
    assert done_check < running_check < start < at('> "%RUNNING%" echo no script yet') < first
    # the started marker names the script before it runs
    run = at(":run")
    assert lines[run + 1] == '> "%RUNNING%" echo %~nx1'
    assert run + 1 < next(i for i, line in enumerate(lines) if "powershell.exe" in line)
    # a normal end: done, then the started marker goes, then the shutdown
    assert at('> "%DONE%" echo %DATE% %TIME% status %STATUS%') < at('del "%RUNNING%"') \
        < at("shutdown /s /t 0")
    # a later start after an interrupted run: logs it, writes done; no script, no shutdown
    interrupted = lines[at(":interrupted"):run]
    assert interrupted[1:3] == ['set "WAS="', 'set /p WAS=<"%RUNNING%"']
    assert any("the previous run was interrupted while running %WAS%" in line
               and "not running the scripts again, not shutting down" in line
               for line in interrupted)
    assert '> "%DONE%" echo %DATE% %TIME% status interrupted' in interrupted
    assert interrupted[-2:] == ["exit /b 0", ""]
    assert not [line for line in interrupted if "shutdown" in line.split(" echo ")[0]
                or "call" in line or "goto" in line]


async def test_two_builds_of_one_ntfs_template_are_byte_identical(tmp_path: Path) -> None:
    os_dir = windows_os(tmp_path, kmssetup=KMSSETUP)
    cmd = os_dir / "Windows" / "System32" / "cmd.exe"
    os.utime(cmd, (1_600_000_000, 1_700_000_100))  # atime before mtime: a read moves it
    layers = (LayerSource("win10", "os", os_dir), LayerSource("notepad", "app", app_layer(tmp_path)))
    files, links = publish_layer(layers, "ntfs", [script(tmp_path)], "auto")
    spec = ImageSpec(layers=layers, size_gib=1, format="raw", filesystem="ntfs",
                     extra_files=files, extra_symlinks=links)
    # the first on disk, the second in RAM (where this machine has a tmpfs): the same bytes
    first = await compositor.build_image(spec, work_dir=tmp_path / "w1", cache_dir=tmp_path / "c1",
                                         ram_scratch=False)
    time.sleep(1.1)  # every clock-derived second differs between the builds
    second = await compositor.build_image(spec, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c2")
    assert first.cache_key == second.cache_key and not second.cache_hit
    assert filecmp.cmp(first.path, second.path, shallow=False), subprocess.run(
        ["cmp", "-l", str(first.path), str(second.path)], capture_output=True, text=True,
    ).stdout.splitlines()[:10]
    with open(first.path, "rb") as fh:  # the serial derives from the key: not mkntfs's fixed one
        fh.seek(PARTITION_OFFSET + 72)
        serial = fh.read(8)
    raw_key = next((tmp_path / "c1" / "raw").glob("*.img")).stem
    assert serial == bytes.fromhex(DiskIdentity(raw_key, 1).token("ntfs serial", 16))[::-1]
