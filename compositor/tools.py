"""External tools: where they are, which Debian package brings them, what each format needs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ToolMissingError

#: tool -> Debian package that provides it
PACKAGES: dict[str, str] = {
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "tar": "tar",
    "mkntfs": "ntfs-3g",
    "wimlib-imagex": "wimtools",
    "ntfslabel": "ntfs-3g",
    "faketime": "faketime",
    "hivexsh": "libhivex-bin",
    "hivexget": "libhivex-bin",
}

#: Ordinary users often lack the sbin directories in PATH, where e2fsprogs and gdisk live.
_EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

_BASE_TOOLS = ("mke2fs", "e2fsck", "debugfs", "qemu-img")
_FORMAT_TOOLS: dict[str, tuple[str, ...]] = {"gce-tar": ("tar",)}
_FILESYSTEM_TOOLS: dict[str, tuple[str, ...]] = {
    "ntfs": ("mkntfs", "wimlib-imagex", "ntfslabel", "faketime"),
}


@dataclass(frozen=True)
class ToolStatus:
    name: str
    path: str | None  # None when not found
    package: str  # Debian package to install


def find_tool(name: str) -> str | None:
    search = os.environ.get("PATH", os.defpath).split(os.pathsep)
    search += [d for d in _EXTRA_DIRS if d not in search]
    return shutil.which(name, path=os.pathsep.join(search))


def tool_path(name: str) -> str:
    """Absolute path of a tool, or ToolMissingError with the install command."""
    path = find_tool(name)
    if path is None:
        raise ToolMissingError(name, PACKAGES.get(name, name))
    return path


def required_tools(
    formats: Iterable[str], filesystems: Iterable[str] = ("ext4",)
) -> list[ToolStatus]:
    """Tools that building the given formats needs, for `layerbot check`."""
    names: list[str] = list(_BASE_TOOLS)
    for fmt in formats:
        names += _FORMAT_TOOLS.get(fmt, ())
    for fs in filesystems:
        names += _FILESYSTEM_TOOLS.get(fs, ())
    unique = list(dict.fromkeys(names))
    return [ToolStatus(n, find_tool(n), PACKAGES[n]) for n in unique]
