"""Benchmark the compositor: ~1 GiB across 5 layers to qcow2, against `cp -a` of the same tree.

    .venv/bin/python bench/compose.py                 # full size (about 1 GiB, 18,000-entry dir)
    .venv/bin/python bench/compose.py --size-mib 64 --bigdir-entries 3000   # quick smoke run

Prints the composite time and its throughput as a ratio to `cp -a` of the merged tree on the
same disk (both end with sync; page cache dropped first when running as root), the cache-hit
republish time, peak RSS of this process and of its children, and the big-directory case.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compositor import ImageSpec, LayerSource, build_image

MIB = 1 << 20
_NOISE = random.Random(7).randbytes(4 * MIB)


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


def plan_layers(total: int) -> list[tuple[str, str, list[FileSpec]]]:
    """Five layers: os 40 %, three apps 15 % each, platform 15 %; later layers replace a few
    files of earlier ones."""
    rng = random.Random(1)
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


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed_cp(src: Path, dst: Path) -> float:
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    os.sync()
    elapsed = time.perf_counter() - started
    shutil.rmtree(dst)
    return elapsed


async def timed_build(spec: ImageSpec, work: Path, cache: Path) -> tuple[float, object]:
    drop_caches()
    started = time.perf_counter()
    built = await build_image(spec, work_dir=work, cache_dir=cache)
    os.sync()
    return time.perf_counter() - started, built


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


async def main_case(args: argparse.Namespace, tmp: Path) -> None:
    total = args.size_mib * MIB
    layers_dir = tmp / "layers"
    layers_dir.mkdir()
    merged = tmp / "merged"
    sources = []
    print(f"generating ~{args.size_mib} MiB across 5 layers in {tmp} ...", flush=True)
    formats = {"os": "zst", "app1": "", "app2": "dir", "app3": "gz", "platform": ""}
    for name, kind, files in plan_layers(total):
        fmt = formats[name]
        if fmt == "dir":
            source = layers_dir / name
            write_dir_layer(source, files)
        else:
            source = layers_dir / (f"{name}.tar" + (f".{fmt}" if fmt else ""))
            write_tar_layer(source, files, fmt)
        write_dir_layer(merged, files)  # the reference merged tree for cp -a
        sources.append(LayerSource(name, kind, source))  # type: ignore[arg-type]
    size = tree_bytes(merged)
    files = sum(1 for _ in merged.rglob("*"))
    spec = ImageSpec(layers=tuple(sources), size_gib=args.disk_gib, format="qcow2")
    cp_s = timed_cp(merged, tmp / "cp-copy")
    build_s, built = await timed_build(spec, tmp / "work", tmp / "cache")
    started = time.perf_counter()
    hit = await build_image(spec, work_dir=tmp / "work", cache_dir=tmp / "cache")
    hit_s = time.perf_counter() - started
    assert hit.cache_hit
    print(f"\n== 5 layers -> qcow2: {size / MIB:.0f} MiB in {files} entries (merged)")
    print(f"cp -a merged tree:        {cp_s:6.2f} s  ({size / MIB / cp_s:6.1f} MiB/s)")
    print(f"build_image (qcow2):      {build_s:6.2f} s  ({size / MIB / build_s:6.1f} MiB/s)")
    print(f"throughput vs cp -a:      {cp_s / build_s:6.2f} x  (target >= 0.5)")
    print(f"cache-hit republish:      {hit_s:6.3f} s  (target < 1 s)")
    print(f"artifact:                 {built.file_size / MIB:.0f} MiB qcow2")  # type: ignore[attr-defined]
    shutil.rmtree(tmp / "cache")


async def bigdir_case(args: argparse.Namespace, tmp: Path) -> None:
    folder = tmp / "bigdir"
    rng = random.Random(3)
    files = [FileSpec(f"usr/share/man/man1/command-{i:05d}.1.gz", rng.randrange(800, 6000),
                      rng.randrange(1 << 30)) for i in range(args.bigdir_entries)]
    folder.mkdir()
    layer = folder / "os.tar"
    write_tar_layer(layer, files, "")
    merged = folder / "merged"
    write_dir_layer(merged, files)
    size = tree_bytes(merged)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    cp_s = timed_cp(merged, folder / "cp-copy")
    build_s, _ = await timed_build(spec, folder / "work", folder / "cache")
    print(f"\n== one directory of {args.bigdir_entries} entries ({size / MIB:.0f} MiB) -> qcow2")
    print(f"cp -a merged tree:        {cp_s:6.2f} s")
    print(f"build_image (qcow2):      {build_s:6.2f} s  (ratio to cp -a {cp_s / build_s:.2f} x)")
    if args.compare_mke2fs:
        image = folder / "plain.img"
        with open(image, "wb") as fh:
            fh.truncate(1 << 30)
        started = time.perf_counter()
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(merged), str(image)],
                       check=True)
        print(f"plain mke2fs -d (no fix): {time.perf_counter() - started:6.2f} s  (reference)")


def peak_rss() -> None:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS: python process {me:.0f} MiB, largest child process {kids:.0f} MiB "
          "(target < 200 MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="total layer data")
    parser.add_argument("--disk-gib", type=int, default=4, help="virtual disk size")
    parser.add_argument("--bigdir-entries", type=int, default=18000)
    parser.add_argument("--no-bigdir", action="store_true", help="skip the big-directory case")
    parser.add_argument("--compare-mke2fs", action="store_true",
                        help="also time plain mke2fs -d on the big directory (slow)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="layerbot-bench-", dir=args.tmp))
    try:
        print(f"page cache dropped before each timed run: {drop_caches()}")
        asyncio.run(main_case(args, tmp))
        if not args.no_bigdir:
            asyncio.run(bigdir_case(args, tmp))
        peak_rss()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
