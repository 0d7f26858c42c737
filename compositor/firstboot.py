"""layerbot's own publish layer: the connector's scripts and a first-boot runner.

- **Linux (ext4):** ``/usr/lib/layerbot/firstboot`` (POSIX shell) started once by a systemd
  unit enabled through its ``multi-user.target.wants`` symlink. The layers must boot with
  systemd; anything else is a publish error that says what was found.
- **Windows (NTFS):** the scripts and ``firstboot.cmd`` in ``C:\\Windows\\Setup\\Scripts\\layerbot``.
  An App Layering OS layer's ``Windows\\Setup\\Scripts\\kmsdir\\kmssetup.cmd`` gets a call to
  the runner at its end (after activation, so Office licensing is not raced by a logon);
  without it, the SOFTWARE hive gets an ``HKLM\\...\\RunOnce`` value, written offline.

Files are returned as :class:`ExtraFile` (the highest layer); a changed kmssetup.cmd or
SOFTWARE hive replaces the lower layer's copy at the same path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from . import winreg
from .budget import SpaceBudget
from .guestos import LINUX_WANTED, GuestOSError, GuestTree, Wanted, check_linux_boot
from .spec import ExtraFile, Filesystem, LayerSource

ShutdownMode = Literal["auto", "manual"]
PublishLayer = tuple[tuple[ExtraFile, ...], tuple[tuple[str, str], ...]]

# ------------------------------------------------------------------ Linux
SCRIPTS_DIR = "/usr/lib/layerbot/scripts"
RUNNER = "/usr/lib/layerbot/firstboot"
SHUTDOWN_FILE = "/usr/lib/layerbot/shutdown"
UNIT = "/etc/systemd/system/layerbot-firstboot.service"
UNIT_LINK = "/etc/systemd/system/multi-user.target.wants/layerbot-firstboot.service"
LINUX_LOG = "/var/log/layerbot-firstboot.log"
LINUX_DONE = "/var/lib/layerbot/firstboot.done"

# ------------------------------------------------------------------ Windows
WIN_DIR = "/Windows/Setup/Scripts/layerbot"
WIN_RUNNER = f"{WIN_DIR}/firstboot.cmd"
WIN_RUNNER_PATH = r"C:\Windows\Setup\Scripts\layerbot\firstboot.cmd"
WIN_LOG = r"C:\Windows\Temp\layerbot-firstboot.log"
KMSSETUP = "Windows/Setup/Scripts/kmsdir/kmssetup.cmd"
SOFTWARE_HIVE = "Windows/System32/config/SOFTWARE"
RUN_ONCE_VALUE = "layerbot-firstboot"
RUN_ONCE_COMMAND = rf'C:\Windows\System32\cmd.exe /c "{WIN_RUNNER_PATH}"'
KMS_HOOK = (
    "rem layerbot: run the connector's scripts once activation has finished\r\n"
    r'call "%SystemRoot%\Setup\Scripts\layerbot\firstboot.cmd"' "\r\n"
)


def _guest_file(name: str) -> bytes:
    return resources.files("compositor").joinpath("guest", name).read_bytes()


def _numbered(scripts: Sequence[Path]) -> list[tuple[str, bytes]]:
    return [(f"{i:02d}-{s.name}", s.read_bytes()) for i, s in enumerate(scripts, start=1)]


def linux_publish_layer(scripts: Sequence[Path], shutdown: ShutdownMode) -> PublishLayer:
    """Files and symlinks that make a Linux guest run ``scripts`` once at first boot."""
    files = [
        ExtraFile(RUNNER, _guest_file("firstboot.sh"), 0o755),
        ExtraFile(SHUTDOWN_FILE, f"{shutdown}\n".encode(), 0o644),
        ExtraFile(UNIT, _guest_file("layerbot-firstboot.service"), 0o644),
    ]
    files += [ExtraFile(f"{SCRIPTS_DIR}/{name}", data, 0o755) for name, data in _numbered(scripts)]
    return tuple(files), ((UNIT_LINK, UNIT),)


def windows_runner(shutdown: ShutdownMode) -> bytes:
    text = _guest_file("firstboot.cmd").decode().replace("@SHUTDOWN@", shutdown)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def hook_kmssetup(original: bytes) -> bytes:
    """kmssetup.cmd with a call to the runner after its activation steps.

    The call goes at the end, before a final ``exit``/``goto :eof`` line if the script ends
    with one, so it runs after activation has finished.
    """
    if b"layerbot\\firstboot.cmd" in original:
        return original
    text = original.decode("latin-1")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(newline)
    while lines and not lines[-1].strip():
        lines.pop()
    tail: list[str] = []
    if lines and re.match(r"(?i)^\s*(@?exit\b|goto\s+:?eof\b)", lines[-1]):
        tail = [lines.pop()]
    hook = KMS_HOOK.replace("\r\n", newline).rstrip(newline).split(newline)
    return (newline.join([*lines, *hook, *tail]) + newline).encode("latin-1")


def windows_publish_layer(tree: GuestTree, scripts: Sequence[Path],
                          shutdown: ShutdownMode) -> PublishLayer:
    """Scripts + firstboot.cmd, hooked into kmssetup.cmd or the SOFTWARE hive's RunOnce."""
    files = [ExtraFile(WIN_RUNNER, windows_runner(shutdown), 0o755)]
    files += [ExtraFile(f"{WIN_DIR}/{name}", data, 0o755) for name, data in _numbered(scripts)]
    kms = tree.read(KMSSETUP)
    if kms is not None:
        path, content = kms
        files.append(ExtraFile("/" + path, hook_kmssetup(content), 0o755))
        return tuple(files), ()
    hive = tree.read(SOFTWARE_HIVE)
    if hive is None:
        raise GuestOSError(
            "cannot tell how the Windows OS layer starts programs: it has neither "
            f"{KMSSETUP.replace('/', chr(92))} nor a SOFTWARE registry hive "
            f"({SOFTWARE_HIVE.replace('/', chr(92))})")
    path, content = hive
    edited = winreg.set_value(content, winreg.RUN_ONCE, RUN_ONCE_VALUE, RUN_ONCE_COMMAND)
    files.append(ExtraFile("/" + path, edited, 0o644))
    return tuple(files), ()


def publish_layer(layers: Sequence[LayerSource], filesystem: Filesystem,
                  scripts: Sequence[Path], shutdown: ShutdownMode,
                  size_gib: int | None = None) -> PublishLayer:
    """The publish layer for these layers: Linux/systemd on ext4, Windows on NTFS.

    Raises GuestOSError when the layers do not show how the guest boots; with the disk's
    size, DiskTooSmallError as soon as the tar layers' members need more than it holds.
    """
    budget = SpaceBudget.for_disk(filesystem, size_gib) if size_gib else None
    tree = GuestTree(layers, LINUX_WANTED + Wanted.of(KMSSETUP, SOFTWARE_HIVE), budget)
    if filesystem == "ntfs":
        if not tree.exists("Windows/System32"):
            raise GuestOSError("disk.filesystem is ntfs but the layers have no Windows\\System32; "
                               "a Linux OS layer needs disk.filesystem: ext4")
        return windows_publish_layer(tree, scripts, shutdown)
    check_linux_boot(tree)
    return linux_publish_layer(scripts, shutdown)
