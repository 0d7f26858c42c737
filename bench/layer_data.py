"""Synthetic layers for the compositor benches: reproducible file plans and their tar or
directory layers, in the mix of formats a template really has."""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from compositor import LayerSource

MIB = 1 << 20
_NOISE = random.Random(7).randbytes(4 * MIB)
#: layer name -> "dir", or the tar layer's compression ("" for a plain tar)
LAYER_FORMATS = {"os": "zst", "app1": "", "app2": "dir", "app3": "gz", "platform": ""}


@dataclass(frozen=True)
class FileSpec:
    path: str
    size: int
    seed: int


def _data(spec: FileSpec) -> bytes:
    start = spec.seed % (len(_NOISE) - 1)
    out = bytearray()
    while len(out) < spec.size:
        out += _NOISE[start : start + spec.size - len(out)]
        start = 0
    return bytes(out)


def _sizes(total: int, rng: random.Random) -> Iterator[int]:
    """File sizes from 256 B to 1 MiB, log-uniform: about 14,000 files per GiB."""
    left = total
    while left > 0:
        size = min(left, int(2 ** rng.uniform(8, 20)))
        left -= size
        yield size


def plan_layers(total: int, seed: int = 1) -> list[tuple[str, str, list[FileSpec]]]:
    """Five layers: os 40 %, three apps 15 % each, platform 15 %; later layers replace a few
    files of earlier ones. Another seed gives other sizes and contents (distinct layers)."""
    rng = random.Random(seed)
    shares = [("os", "os", 0.40), ("app1", "app", 0.15), ("app2", "app", 0.15),
              ("app3", "app", 0.15), ("platform", "platform", 0.15)]
    layers = []
    earlier: list[str] = []
    for name, kind, share in shares:
        files = []
        for i, size in enumerate(_sizes(int(total * share), rng)):
            folder = f"{name}/d{i // 400:03d}/s{i % 20:02d}"
            files.append(FileSpec(f"usr/{folder}/f{i:06d}", size, rng.randrange(1 << 30)))
        for path in rng.sample(earlier, min(len(earlier), 50)):
            files.append(FileSpec(path, 4096, rng.randrange(1 << 30)))  # overrides
        earlier += [f.path for f in files if f.size < 65536]
        layers.append((name, kind, files))
    return layers


def merged_bytes(plan: list[tuple[str, str, list[FileSpec]]]) -> int:
    """Bytes of file data in the merged tree (a later layer's file replaces an earlier one's)."""
    sizes = {spec.path: spec.size for _, _, files in plan for spec in files}
    return sum(sizes.values())


def write_tar_layer(path: Path, files: list[FileSpec], compress: str) -> None:
    raw = open(path, "wb")  # noqa: SIM115 - closed below, after the compressor
    sink: BinaryIO = raw
    if compress == "zst":
        sink = zstandard.ZstdCompressor(level=1).stream_writer(raw)  # type: ignore[assignment]
    elif compress == "gz":
        sink = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)  # type: ignore[assignment]
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for spec in files:
            parts = spec.path.split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                if folder not in dirs:
                    dirs.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    tar.addfile(info)
            info = tarfile.TarInfo(spec.path)
            info.size, info.mode, info.mtime = spec.size, 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(_data(spec)))
    sink.close()
    if sink is not raw:
        raw.close()


def write_dir_layer(root: Path, files: list[FileSpec]) -> None:
    for spec in files:
        path = root / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_data(spec))
        os.utime(path, (1_700_000_000, 1_700_000_000))


def write_layers(folder: Path, plan: list[tuple[str, str, list[FileSpec]]],
                 merged: Path | None = None) -> tuple[LayerSource, ...]:
    """The plan's layers under folder in LAYER_FORMATS; with merged, also the merged tree
    (the reference `cp -a` copies)."""
    folder.mkdir(parents=True)
    sources = []
    for name, kind, files in plan:
        fmt = LAYER_FORMATS[name]
        if fmt == "dir":
            source = folder / name
            write_dir_layer(source, files)
        else:
            source = folder / (f"{name}.tar" + (f".{fmt}" if fmt else ""))
            write_tar_layer(source, files, fmt)
        if merged is not None:
            write_dir_layer(merged, files)
        sources.append(LayerSource(name, kind, source))  # type: ignore[arg-type]
    return tuple(sources)


def drop_caches() -> bool:
    """Empty the page cache (root only); False when it could not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
