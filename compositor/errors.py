"""The compositor's errors. Every message is user-facing: it says what went wrong and where.

    CompositorError
     ├── LayerError          bad or unsafe layer content (names the layer and the member, or
     │                       the archive file when the archive itself cannot be read)
     ├── DiskTooSmallError   the merged content does not fit the requested disk
     ├── TooManyEntriesError the layers have more entries than the disk has inodes for
     ├── HostSpaceError      the machine running layerbot ran out of disk space
     ├── HostInodesError     ... or of inodes, for the layers' entries
     ├── ToolMissingError    an external tool is not installed (gives the apt-get command)
     └── ToolFailedError     an external tool exited with an error (gives its stderr)
"""

from __future__ import annotations

import shutil
from pathlib import Path


class CompositorError(Exception):
    """Base class; str(error) is shown to the user as is."""


class LayerError(CompositorError):
    """``layer 'vda', member 'etc/x': problem``; for the archive as a whole (member None):
    ``layer 'vda' (/path/vda.tar.gz): problem``."""

    def __init__(
        self, layer: str, member: str | None, problem: str, *, archive: str | None = None
    ) -> None:
        where = f"layer {layer!r}"
        if archive:
            where += f" ({archive})"
        if member is not None:
            where += f", member {member!r}"
        super().__init__(f"{where}: {problem}")
        self.layer = layer
        self.member = member
        self.problem = problem
        self.archive = archive


class DiskTooSmallError(CompositorError):
    """The merged content does not fit. With ``layer`` (and ``member``), found while unpacking
    the layers, which stopped there: they need *more than* needed_bytes."""

    def __init__(
        self, needed_bytes: int, capacity_bytes: int, size_gib: int, *,
        layer: str | None = None, member: str | None = None,
    ) -> None:
        where, amount = "", "about"
        if layer is not None:
            where = f"layer {layer!r}" + (f", member {member!r}" if member else "") + ": "
            amount = "more than"
        super().__init__(
            f"{where}the layers need {amount} {_mib(needed_bytes)} MiB but a {size_gib} GiB disk "
            f"holds at most {_mib(capacity_bytes)} MiB of files; choose a disk of at least "
            f"{_suggest_gib(needed_bytes, capacity_bytes, size_gib)} GiB"
        )
        self.needed_bytes = needed_bytes
        self.capacity_bytes = capacity_bytes
        self.size_gib = size_gib
        self.layer = layer
        self.member = member


class TooManyEntriesError(CompositorError):
    """The layers have more entries (files, directories, links) than the disk's filesystem
    has inodes for; found while unpacking, which stopped there."""

    def __init__(self, max_entries: int, size_gib: int, *, layer: str, member: str | None) -> None:
        where = f"layer {layer!r}" + (f", member {member!r}" if member else "")
        super().__init__(
            f"{where}: the layers have more than {max_entries} entries (files, directories, "
            f"links) but a {size_gib} GiB disk holds at most {max_entries} files; choose a "
            f"bigger disk")
        self.max_entries = max_entries
        self.size_gib = size_gib
        self.layer = layer
        self.member = member


class HostInodesError(CompositorError):
    """The work folder's filesystem has too few free inodes (files) left for the layers."""

    def __init__(self, folder: Path, free: int, layer: str) -> None:
        super().__init__(
            f"no free inodes left on this machine's disk while unpacking layer {layer!r}: {folder} "
            f"had {free} free inodes (files) and the layers need more; free some there (or give "
            f"the work folder a filesystem with more inodes) and publish again")
        self.folder = folder
        self.layer = layer


class ToolMissingError(CompositorError):
    def __init__(self, tool: str, package: str) -> None:
        super().__init__(
            f"{tool} is not installed; install it with: sudo apt-get install {package}"
        )
        self.tool = tool
        self.package = package


class ToolFailedError(CompositorError):
    def __init__(self, tool: str, returncode: int, stderr: str) -> None:
        detail = stderr.strip()[-800:] or "(no error output)"
        super().__init__(f"{tool} failed with exit code {returncode}: {detail}")
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr


#: Less free space than this where a tool failed for lack of space: the host is full, not
#: the image (both report ENOSPC, e.g. ntfs-3g for a full NTFS volume).
HOST_FULL_BYTES = 64 << 20


class HostSpaceError(CompositorError):
    def __init__(self, folder: Path, doing: str) -> None:
        super().__init__(
            f"no space left on this machine's disk while {doing}: {folder} has "
            f"{free_bytes(folder) >> 20} MiB free; free some space there and publish again")
        self.folder = folder


class ScratchFull(Exception):
    """The layers unpack to more than the RAM scratch reserved for them (compositor.scratch):
    not an error of the build, which starts again on disk."""


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def host_full(folder: Path) -> bool:
    return free_bytes(folder) < HOST_FULL_BYTES


def _mib(n: int) -> int:
    return -(-n // (1 << 20))


def _suggest_gib(needed: int, capacity: int, size_gib: int) -> int:
    ratio = capacity / (size_gib << 30) if size_gib else 0.9
    return max(size_gib + 1, -(-int(needed / max(ratio, 0.5)) // (1 << 30)))
