"""layerbot's own publish layer: the connector's scripts and a first-boot runner.

For ext4 (Linux) guests the runner is a POSIX shell script started once by a
systemd unit, enabled through its ``multi-user.target.wants`` symlink.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from compositor.spec import ExtraFile

SCRIPTS_DIR = "/usr/lib/layerbot/scripts"
RUNNER = "/usr/lib/layerbot/firstboot"
UNIT = "/etc/systemd/system/layerbot-firstboot.service"
UNIT_LINK = "/etc/systemd/system/multi-user.target.wants/layerbot-firstboot.service"


def _guest_file(name: str) -> bytes:
    return resources.files("compositor").joinpath("guest", name).read_bytes()


def linux_publish_layer(
    scripts: list[Path], shutdown: Literal["auto", "manual"]
) -> tuple[tuple[ExtraFile, ...], tuple[tuple[str, str], ...]]:
    """Files and symlinks that make a Linux guest run ``scripts`` once at first boot."""
    files = [
        ExtraFile(RUNNER, _guest_file("firstboot.sh"), 0o755),
        ExtraFile("/usr/lib/layerbot/shutdown", f"{shutdown}\n".encode(), 0o644),
        ExtraFile(UNIT, _guest_file("layerbot-firstboot.service"), 0o644),
    ]
    for index, script in enumerate(scripts, start=1):
        files.append(ExtraFile(f"{SCRIPTS_DIR}/{index:02d}-{script.name}", script.read_bytes(), 0o755))
    return tuple(files), ((UNIT_LINK, UNIT),)
