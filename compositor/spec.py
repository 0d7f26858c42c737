"""What the compositor is asked to build, and what it hands back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LayerKind = Literal["os", "app", "platform"]
Filesystem = Literal["ext4", "ntfs"]
DiskFormat = Literal["raw", "qcow2", "vmdk", "vhd", "vhd-dynamic", "vhdx", "gce-tar"]

FORMAT_EXTENSIONS: dict[str, str] = {
    "raw": "img",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vhd",
    "vhd-dynamic": "vhd",
    "vhdx": "vhdx",
    "gce-tar": "tar.gz",
}


@dataclass(frozen=True)
class LayerSource:
    """One layer: a directory or a tar archive (plain, gzip, zstd)."""

    name: str
    kind: LayerKind
    source: Path


@dataclass(frozen=True)
class ExtraFile:
    """A file of layerbot's own publish layer (connector scripts, first-boot runner)."""

    path: str  # absolute path inside the image, e.g. "/usr/lib/layerbot/firstboot"
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class ImageSpec:
    """Layers lowest priority first: OS, apps in listed order, platform."""

    layers: tuple[LayerSource, ...]
    size_gib: int
    format: DiskFormat
    filesystem: Filesystem = "ext4"
    #: layerbot's publish layer, applied last (highest priority).
    extra_files: tuple[ExtraFile, ...] = ()
    #: Symlinks of the publish layer: (path in image, target).
    extra_symlinks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuiltImage:
    path: Path  # the artifact in the cache (do not modify; copy or link it)
    format: DiskFormat
    virtual_size: int  # bytes the guest sees
    file_size: int  # bytes of the artifact file
    cache_key: str
    cache_hit: bool
    layer_digests: dict[str, str] = field(default_factory=dict)  # layer name -> sha256


#: progress(stage_note, fraction 0..1) — called from worker threads; must be thread-safe.
ProgressCallback = Callable[[str, float], None]
