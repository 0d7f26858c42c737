"""Benchmark a republish after one changed layer: on disk without and with the extracted-layer
cache, and in RAM (build_image's default where memory allows).

    .venv/bin/python bench/republish.py                        # full size (about 1 GiB, 5 layers)
    .venv/bin/python bench/republish.py --size-mib 64          # quick smoke run

For each mode (each with a fresh cache): a cold composite of bench/compose.py's five layers to
qcow2, then one app tar layer is replaced by one of the same sizes and different content and
the template is published again. The page cache is dropped before each timed build (when
running as root). Prints both times and the ratio republish / cold per mode; exits 1 when the
default mode's ratio misses the target (<= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import layer_data
from bench.layer_data import LAYER_FORMATS as FORMATS
from bench.layer_data import FileSpec, drop_caches, plan_layers, write_tar_layer
from compositor import ImageSpec, LayerSource, build_image
from compositor.layer_cache import ENABLE_ENV

MIB = 1 << 20
TARGET = 0.5
CHANGED = "app1"


@dataclasses.dataclass
class Layers:
    sources: list[LayerSource]
    files: dict[str, list[FileSpec]]
    changed_bytes: int
    total_bytes: int


def write_layers(root: Path, total: int) -> Layers:
    plan = plan_layers(total)
    sources = layer_data.write_layers(root, plan)
    files = {name: specs for name, _, specs in plan}
    sizes = {name: sum(f.size for f in specs) for name, specs in files.items()}
    return Layers(list(sources), files, sizes[CHANGED], sum(sizes.values()))


def change_layer(layers: Layers) -> None:
    """The same paths and sizes, other content (a new version of the app)."""
    source = next(s for s in layers.sources if s.name == CHANGED)
    changed = [dataclasses.replace(f, seed=f.seed + 1) for f in layers.files[CHANGED]]
    write_tar_layer(Path(source.source), changed, FORMATS[CHANGED])


def restore_layer(layers: Layers) -> None:
    source = next(s for s in layers.sources if s.name == CHANGED)
    write_tar_layer(Path(source.source), layers.files[CHANGED], FORMATS[CHANGED])


async def timed_build(spec: ImageSpec, work: Path, cache: Path, stages: bool, ram: bool) -> float:
    drop_caches()
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    built = await build_image(spec, work_dir=work, cache_dir=cache, ram_scratch=ram,
                              progress=lambda note, _: marks.append((time.perf_counter(), note)))
    os.sync()
    elapsed = time.perf_counter() - started
    assert not built.cache_hit
    if stages:
        marks.append((started + elapsed, "end"))
        spent: dict[str, float] = {}
        for (at, note), (later, _) in itertools.pairwise(marks):
            stage = note.split(" (")[0].split(" layer ")[0]
            spent[stage] = spent.get(stage, 0.0) + later - at
        print("   " + ", ".join(f"{stage} {s:.1f}s" for stage, s in spent.items() if s >= 0.05))
    return elapsed


async def run_mode(layers: Layers, spec: ImageSpec, work: Path, cache: Path,
                   layer_cache: bool, ram: bool, stages: bool) -> tuple[float, float]:
    os.environ[ENABLE_ENV] = "1" if layer_cache else "0"
    restore_layer(layers)
    cold = await timed_build(spec, work, cache, stages, ram)
    change_layer(layers)
    republish = await timed_build(spec, work, cache, stages, ram)
    shutil.rmtree(cache)
    return cold, republish


#: label -> (layer cache, work in RAM); build_image's default is the last one (the layer cache
#: serves builds on disk only)
MODES = {
    "on disk, no layer cache": (False, False),
    "on disk, layer cache": (True, False),
    "in RAM (the default)": (True, True),
}


async def main_async(args: argparse.Namespace, tmp: Path) -> bool:
    print(f"generating ~{args.size_mib} MiB across 5 layers in {tmp} ...", flush=True)
    layers = write_layers(tmp / "layers", args.size_mib * MIB)
    spec = ImageSpec(layers=tuple(layers.sources), size_gib=args.disk_gib, format="qcow2")
    work = Path(tempfile.mkdtemp(prefix="republish-work-", dir=tmp))
    try:
        results = {}
        for label, (layer_cache, ram) in MODES.items():
            if args.stages:
                print(label)
            results[label] = await run_mode(layers, spec, work, tmp / "cache", layer_cache, ram,
                                            args.stages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    share = layers.changed_bytes / layers.total_bytes
    print(f"\n== republish after changing {CHANGED} ({layers.changed_bytes / MIB:.0f} MiB, "
          f"{share:.0%} of {layers.total_bytes / MIB:.0f} MiB) -> qcow2")
    for label, (cold, republish) in results.items():
        print(f"{label:26} cold {cold:6.2f} s, republish {republish:6.2f} s, "
              f"ratio {republish / cold:5.2f}")
    cold, republish = results["in RAM (the default)"]
    disk_cold, disk_cached = results["on disk, no layer cache"][0], results["on disk, layer cache"]
    ratio = republish / cold
    print(f"republish / cold composite (default): {ratio:.2f}  (target <= {TARGET})")
    print(f"on disk, republish with the layer cache / cold without: {disk_cached[1] / disk_cold:.2f}")
    print(f"on disk, cold with the layer cache / cold without: {disk_cached[0] / disk_cold:.2f} "
          "(the cost of storing)")
    return ratio <= TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="total layer data")
    parser.add_argument("--disk-gib", type=int, default=4, help="virtual disk size")
    parser.add_argument("--stages", action="store_true", help="print each build's stage times")
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="layerbot-republish-", dir=args.tmp))
    try:
        print(f"page cache dropped before each timed run: {drop_caches()}")
        met = asyncio.run(main_async(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
