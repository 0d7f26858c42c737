"""bench/compose.py --scale: several composites at once, and one composite into ever larger disks.

Scaling: 1, 2, 4 and 8 templates with distinct layers, built at once through
build_image_isolated (one compositor process per build, as the runner runs them) into one
shared cache directory (a runner with several slots has one cache: its lock and eviction are
part of what is measured). Each count gets a fresh cache, so nothing is a cache hit and every
build hashes its layers.

Disk size: the same layers into 4, 8 and 32 GiB (sparse) qcow2 disks, each into a fresh cache;
time and peak RSS must stay flat: at most FLAT_RATIO times the smallest disk's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from host_load import Load, block_device, load_between, snapshot
from layer_data import MIB, drop_caches, merged_bytes, plan_layers, write_layers
from tree_rss import TreeRss

from compositor import BuiltImage, ImageSpec, LayerSource
from compositor.isolated import build_image_isolated

SCALE_COUNTS = (1, 2, 4, 8)
DISK_SIZES_GIB = (4, 8, 32)
#: largest/smallest disk: time and peak RSS ratio still called flat
FLAT_RATIO = 1.3
#: n builds at once must reach this share of one build's throughput (not slower than in turn)
MIN_SPEEDUP = 0.9


@dataclass
class StageClock:
    """Seconds each build spent per stage, from its progress notes."""

    started: float = field(default_factory=time.perf_counter)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def note(self, text: str, _fraction: float) -> None:
        key = stage_key(text)
        if not self.marks or self.marks[-1][1] != key:
            self.marks.append((time.perf_counter(), key))

    def durations(self, ended: float) -> dict[str, float]:
        spans: dict[str, float] = {}
        points = [(self.started, "start child"), *self.marks, (ended, "")]
        for (at, key), (after, _) in itertools.pairwise(points):
            spans[key] = spans.get(key, 0.0) + after - at
        spans.pop("done", None)
        return spans


def stage_key(note: str) -> str:
    """'extracting layer 2/5 (app1)' -> 'extracting layer', 'creating ext4 (812 entries)'
    -> 'creating ext4': one row per stage, whatever the counts in its note."""
    return re.split(r" \(| \d", note, maxsplit=1)[0]


@dataclass
class Run:
    """One timed group of builds started together."""

    label: str
    builds: int
    data_bytes: int
    wall: float
    cpu: float
    #: of which in the kernel (system time)
    cpu_sys: float
    host: Load
    rss: TreeRss
    stages: dict[str, float]
    built: list[BuiltImage]
    note: str = ""

    @property
    def mib_per_s(self) -> float:
        return self.data_bytes / MIB / self.wall


def _children_cpu() -> tuple[float, float]:
    """User and system seconds of the ended child processes (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


async def timed_group(label: str, specs: Sequence[ImageSpec], data_bytes: int, work: Path,
                      cache: Path) -> Run:
    """Build specs at once (page cache dropped first, ends with sync) and measure them."""
    drop_caches()
    clocks = [StageClock() for _ in specs]
    device = block_device(cache.parent)
    cpu0, host0 = _children_cpu(), snapshot(device)
    with TreeRss() as rss:
        started = time.perf_counter()
        for clock in clocks:
            clock.started = started
        built = await asyncio.gather(*(
            build_image_isolated(spec, work_dir=work, cache_dir=cache, progress=clock.note)
            for spec, clock in zip(specs, clocks, strict=True)))
        await asyncio.to_thread(os.sync)
        wall = time.perf_counter() - started
    host = load_between(host0, snapshot(device), wall)
    stages: dict[str, float] = {}
    for clock in clocks:
        for key, seconds in clock.durations(started + wall).items():
            stages[key] = stages.get(key, 0.0) + seconds / len(clocks)
    user, system = (after - before for after, before in zip(_children_cpu(), cpu0, strict=True))
    return Run(label, len(specs), data_bytes, wall, user + system, system, host, rss, stages,
               list(built))


def _generate(folder: Path, total: int, seed: int) -> tuple[tuple[LayerSource, ...], int]:
    plan = plan_layers(total, seed)
    return write_layers(folder, plan), merged_bytes(plan)


async def scale_case(scale_mib: int, tmp: Path) -> list[str]:
    """Returns the missed targets."""
    root = tmp / "scale"
    print(f"\ngenerating {max(SCALE_COUNTS)} templates of ~{scale_mib} MiB (distinct layers) ...",
          flush=True)
    templates = [await asyncio.to_thread(_generate, root / f"t{i}", scale_mib * MIB, 100 + i)
                 for i in range(max(SCALE_COUNTS))]
    runs = []
    for count in SCALE_COUNTS:
        chosen = templates[:count]
        specs = [ImageSpec(layers=layers, size_gib=4, format="qcow2") for layers, _ in chosen]
        cache = root / f"cache-{count}"
        runs.append(await timed_group(str(count), specs, sum(size for _, size in chosen),
                                      root / "work", cache))
        shutil.rmtree(cache)
    cpus = os.cpu_count() or 1
    base = runs[0].mib_per_s
    print(f"\n== {scale_mib} MiB templates built at once -> qcow2 (4 GiB), one shared cache, "
          f"{cpus} CPUs")
    print(" n  wall s   MiB  MiB/s  speedup  eff.  RSS sum MiB  per build  largest process")
    missed = []
    for run in runs:
        speedup = run.mib_per_s / base
        sum_mib = run.rss.peak_total_kib / 1024
        print(f"{run.builds:2d} {run.wall:7.1f} {run.data_bytes / MIB:5.0f} {run.mib_per_s:6.1f}"
              f" {speedup:7.2f}x {speedup / min(run.builds, cpus):5.2f} {sum_mib:12.0f}"
              f" {sum_mib / run.builds:10.0f}  {_largest(run.rss)}")
        if run.builds > 1 and speedup < MIN_SPEEDUP:
            missed.append(f"{run.builds} builds at once: speedup {speedup:.2f} < {MIN_SPEEDUP}")
    print(f"target: speedup >= {MIN_SPEEDUP} at every count (not slower than one after another);"
          " eff. = speedup / min(n, CPUs)")
    print_resources(runs)
    print_stages("seconds per build and stage (mean), by builds at once", runs)
    return missed


async def disk_size_case(size_mib: int, tmp: Path) -> list[str]:
    """Returns the missed targets."""
    root = tmp / "disk-size"
    print(f"\ngenerating ~{size_mib} MiB across 5 layers for the disk-size case ...", flush=True)
    layers, data = await asyncio.to_thread(_generate, root / "layers", size_mib * MIB, 1)
    runs = []
    for size_gib in DISK_SIZES_GIB:
        spec = ImageSpec(layers=layers, size_gib=size_gib, format="qcow2")
        cache = root / f"cache-{size_gib}"
        run = await timed_group(f"{size_gib} GiB", [spec], data, root / "work", cache)
        raws = list((cache / "raw").glob("*.img"))
        run.note = f"{sum(_allocated(p) for p in raws) / MIB:.0f}"
        runs.append(run)
        shutil.rmtree(cache)
    print(f"\n== the same {data / MIB:.0f} MiB into larger (sparse) disks -> qcow2")
    print(" disk GiB  wall s  MiB/s  qcow2 MiB  raw allocated MiB  RSS sum MiB  largest process")
    for size_gib, run in zip(DISK_SIZES_GIB, runs, strict=True):
        print(f"{size_gib:9d} {run.wall:7.1f} {run.mib_per_s:6.1f}"
              f" {run.built[0].file_size / MIB:10.0f} {run.note:>18s}"
              f" {run.rss.peak_total_kib / 1024:12.0f}  {_largest(run.rss)}")
    small, large = runs[0], runs[-1]
    time_ratio = large.wall / small.wall
    rss_ratio = large.rss.peak_total_kib / max(1, small.rss.peak_total_kib)
    print(f"{DISK_SIZES_GIB[-1]}/{DISK_SIZES_GIB[0]} GiB: time {time_ratio:.2f}x, "
          f"peak RSS {rss_ratio:.2f}x  (flat: both <= {FLAT_RATIO})")
    print_resources(runs)
    print_stages("seconds per stage, by disk size", runs)
    missed = []
    if time_ratio > FLAT_RATIO:
        missed.append(f"disk size: time ratio {time_ratio:.2f} > {FLAT_RATIO}")
    if rss_ratio > FLAT_RATIO:
        missed.append(f"disk size: peak RSS ratio {rss_ratio:.2f} > {FLAT_RATIO}")
    return missed


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _largest(rss: TreeRss) -> str:
    return f"{rss.peak_process.kib / 1024:.0f} MiB ({rss.peak_process.name})"


def print_resources(runs: Sequence[Run]) -> None:
    """Where the time went: the builds' CPU, the host's CPU and disk, stalls (PSI), memory."""
    print("-- resources (host-wide columns include other users' load)")
    print("     run  cpu s  sys  cpu/wall  host busy  iowait  disk read  written  disk busy"
          "  cpu stall  io stall  RSS at peak, MiB")
    for run in runs:
        host = run.host
        parts = ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in run.rss.at_peak_by_name().items())
        print(f"{run.label:>8s} {run.cpu:6.1f} {run.cpu_sys / run.cpu:4.0%} {run.cpu / run.wall:9.2f}"
              f" {host.cpu_busy:10.0%}"
              f" {host.iowait:7.0%} {host.read_bytes / MIB:7.0f} M {host.written_bytes / MIB:6.0f} M"
              f" {host.disk_busy:10.0%} {host.cpu_stall:10.0%} {host.io_stall:9.0%}  {parts}")


def print_stages(title: str, runs: Sequence[Run]) -> None:
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.stages if key not in keys]
    width = max(len(key) for key in keys)
    print(f"-- {title}")
    print(" " * width + "".join(f"{run.label:>9s}" for run in runs))
    for key in keys:
        print(f"{key:{width}s}" + "".join(f"{run.stages.get(key, 0.0):9.2f}" for run in runs))
