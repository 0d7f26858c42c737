"""Benchmark the compositor: ~1 GiB across 5 layers to qcow2, against `cp -a` of the same tree.

    .venv/bin/python bench/compose.py                 # full size (about 1 GiB, 18,000-entry dir)
    .venv/bin/python bench/compose.py --size-mib 64 --bigdir-entries 3000   # quick smoke run
    .venv/bin/python bench/compose.py --scale-only    # 1/2/4/8 builds at once; 4, 8, 32 GiB disks
    .venv/bin/python bench/compose.py --scale-only --scale-mib 16 --size-mib 64  # its smoke run

Prints the composite time and its throughput as a ratio to `cp -a` of the merged tree on the
same disk (both end with sync; page cache dropped first when running as root), the same build
working on disk instead of in RAM, the cache-hit republish time, peak RSS of this process and
of its children, and the big-directory case.
With --scale (bench/compose_scale.py), also the scaling curve and the disk-size flatness.
Exits 1 when a target the cases check is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compose_scale import disk_size_case, scale_case
from layer_data import (
    MIB,
    FileSpec,
    drop_caches,
    plan_layers,
    tree_bytes,
    write_dir_layer,
    write_layers,
    write_tar_layer,
)

from compositor import ImageSpec, LayerSource, build_image


def timed_cp(src: Path, dst: Path) -> float:
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    os.sync()
    elapsed = time.perf_counter() - started
    shutil.rmtree(dst)
    return elapsed


async def timed_build(spec: ImageSpec, work: Path, cache: Path,
                      ram_scratch: bool = True) -> tuple[float, object]:
    drop_caches()
    started = time.perf_counter()
    built = await build_image(spec, work_dir=work, cache_dir=cache, ram_scratch=ram_scratch)
    os.sync()
    return time.perf_counter() - started, built


#: cp -a seconds / build seconds, cold, both ending with sync
COLD_TARGET = 0.8


async def main_case(args: argparse.Namespace, tmp: Path) -> list[str]:
    merged = tmp / "merged"
    print(f"generating ~{args.size_mib} MiB across 5 layers in {tmp} ...", flush=True)
    sources = write_layers(tmp / "layers", plan_layers(args.size_mib * MIB), merged)
    size = tree_bytes(merged)
    files = sum(1 for _ in merged.rglob("*"))
    spec = ImageSpec(layers=sources, size_gib=args.disk_gib, format="qcow2")
    cp_s = timed_cp(merged, tmp / "cp-copy")
    build_s, built = await timed_build(spec, tmp / "work", tmp / "cache")
    started = time.perf_counter()
    hit = await build_image(spec, work_dir=tmp / "work", cache_dir=tmp / "cache")
    hit_s = time.perf_counter() - started
    assert hit.cache_hit
    disk_s, _ = await timed_build(spec, tmp / "work", tmp / "cache-disk", ram_scratch=False)
    print(f"\n== 5 layers -> qcow2: {size / MIB:.0f} MiB in {files} entries (merged)")
    print(f"cp -a merged tree:        {cp_s:6.2f} s  ({size / MIB / cp_s:6.1f} MiB/s)")
    print(f"build_image (qcow2):      {build_s:6.2f} s  ({size / MIB / build_s:6.1f} MiB/s)")
    print(f"throughput vs cp -a:      {cp_s / build_s:6.2f} x  (target >= {COLD_TARGET})")
    print(f"... working on disk:      {disk_s:6.2f} s  ({cp_s / disk_s:.2f} x; in RAM "
          f"{disk_s / build_s:.2f} x faster)")
    print(f"cache-hit republish:      {hit_s:6.3f} s  (target < 1 s)")
    print(f"artifact:                 {built.file_size / MIB:.0f} MiB qcow2")  # type: ignore[attr-defined]
    shutil.rmtree(tmp / "cache")
    shutil.rmtree(tmp / "cache-disk")
    missed = []
    if cp_s / build_s < COLD_TARGET:
        missed.append(f"composite {cp_s / build_s:.2f} x cp -a, target >= {COLD_TARGET}")
    if hit_s >= 1:
        missed.append(f"cache-hit republish {hit_s:.3f} s, target < 1 s")
    return missed


async def bigdir_case(args: argparse.Namespace, tmp: Path) -> list[str]:
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
    print(f"build_image (qcow2):      {build_s:6.2f} s  (ratio to cp -a {cp_s / build_s:.2f} x, "
          f"target >= {COLD_TARGET})")
    if args.compare_mke2fs:
        image = folder / "plain.img"
        with open(image, "wb") as fh:
            fh.truncate(1 << 30)
        started = time.perf_counter()
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(merged), str(image)],
                       check=True)
        print(f"plain mke2fs -d (no fix): {time.perf_counter() - started:6.2f} s  (reference)")
    if cp_s / build_s < COLD_TARGET:
        return [f"big directory {cp_s / build_s:.2f} x cp -a, target >= {COLD_TARGET}"]
    return []


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
    parser.add_argument("--scale", action="store_true",
                        help="also build 1, 2, 4, 8 templates at once and 4/8/32 GiB disks")
    parser.add_argument("--scale-only", action="store_true", help="only the --scale cases")
    parser.add_argument("--scale-mib", type=int, default=256, help="layer data per template")
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="layerbot-bench-", dir=args.tmp))
    missed: list[str] = []
    try:
        print(f"page cache dropped before each timed run: {drop_caches()}")
        if not args.scale_only:
            missed += asyncio.run(main_case(args, tmp))
            if not args.no_bigdir:
                missed += asyncio.run(bigdir_case(args, tmp))
            peak_rss()
        if args.scale or args.scale_only:
            missed += asyncio.run(scale_case(args.scale_mib, tmp))
            missed += asyncio.run(disk_size_case(args.size_mib, tmp))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for target in missed:
        print(f"MISSED: {target}")
    if missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
