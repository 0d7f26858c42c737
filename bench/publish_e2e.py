"""End to end: ``layerbot publish`` to a local qcow2 target, process start to exit, against
``cp -a`` of the merged tree; then the same after one app layer changed.

    .venv/bin/python bench/publish_e2e.py                   # 600 MiB over 5 layers
    .venv/bin/python bench/publish_e2e.py --size-mib 64     # quick smoke run

The five layers are a zstd tar, a plain tar, a directory, a gzip tar and a plain tar, as in
bench/compose.py. Each timed run starts with the page cache dropped (as root) and ends with
sync, so both sides pay for getting the bytes onto the disk: ``layerbot publish --yes`` (a
fresh process: imports, catalog, store, the compositor's child process, the copy to the
target folder with its fsync) and ``cp -a``. Prints the seconds and the ratios cp -a / publish
(target >= 0.8, cold) and republish / cold publish (target <= 0.5); exit 1 when one is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.layer_data import (
    LAYER_FORMATS,
    MIB,
    drop_caches,
    merged_bytes,
    plan_layers,
    write_layers,
    write_tar_layer,
)

ROOT = Path(__file__).resolve().parents[1]
LAYERBOT = Path(sys.executable).with_name("layerbot")
COLD_TARGET = 0.8
REPUBLISH_TARGET = 0.5
CHANGED = "app1"


def catalog(folder: Path, sources: dict[str, Path], disk_gib: int) -> Path:
    (folder / "scripts").mkdir()
    (folder / "scripts" / "setup.sh").write_text("#!/bin/sh\necho set up\n")
    layers = "\n".join(f"  {name}: {{kind: {kind}, source: {path}}}"
                       for name, (kind, path) in sources.items())
    text = f"""\
layers:
{layers}
connectors:
  folder: {{type: local, path: ./published, format: qcow2, scripts: [scripts/setup.sh]}}
templates:
  bench:
    description: bench/publish_e2e.py
    os_layer: os
    app_layers: [app1, app2, app3]
    platform_layer: platform
    connector: folder
    disk: {{size_gib: {disk_gib}}}
runner:
  cache_dir: .layerbot/cache
  work_dir: .layerbot/work
"""
    path = folder / "layerbot.yml"
    path.write_text(text)
    return path


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    drop_caches()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    os.sync()
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def publish(folder: Path, config: Path, env: dict[str, str]) -> float:
    return timed([str(LAYERBOT), "--config", str(config), "--db", str(folder / "tasks.db"),
                  "publish", "bench", "--yes"], folder, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=600, help="total layer data")
    parser.add_argument("--disk-gib", type=int, default=4, help="virtual disk size")
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate the data")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="layerbot-e2e-", dir=args.tmp))
    try:
        print(f"page cache dropped before each timed run: {drop_caches()}")
        plan = plan_layers(args.size_mib * MIB)
        merged = tmp / "merged"
        print(f"generating ~{args.size_mib} MiB across 5 layers in {tmp} ...", flush=True)
        layers = write_layers(tmp / "layers", plan, merged)
        sources = {layer.name: (layer.kind, layer.source) for layer in layers}
        config = catalog(tmp, sources, args.disk_gib)
        env = dict(os.environ)

        cp_s = timed(["cp", "-a", str(merged), str(tmp / "cp-copy")], tmp)
        shutil.rmtree(tmp / "cp-copy")
        cold_s = publish(tmp, config, env)

        # one app layer replaced by one of the same size, different content
        name = CHANGED
        changed = plan_layers(args.size_mib * MIB, seed=2)
        new_files = next(f for n, _, f in changed if n == CHANGED)
        write_tar_layer(sources[name][1], new_files, LAYER_FORMATS[name])
        republish_s = publish(tmp, config, env)
        published = sorted((tmp / "published").rglob("*.qcow2"))

        size = merged_bytes(plan)
        changed_share = sum(f.size for f in new_files) / size
        print(f"\n== layerbot publish, {size / MIB:.0f} MiB in 5 layers -> local qcow2 "
              f"(process start to exit, then sync)")
        print(f"cp -a merged tree:        {cp_s:6.2f} s")
        print(f"layerbot publish (cold):  {cold_s:6.2f} s  ratio cp -a / publish "
              f"{cp_s / cold_s:.2f} x (target >= {COLD_TARGET})")
        print(f"republish, {CHANGED} changed ({changed_share:.0%} of the bytes): "
              f"{republish_s:6.2f} s  ratio to cold {republish_s / cold_s:.2f} "
              f"(target <= {REPUBLISH_TARGET})")
        print(f"published: {len(published)} qcow2 files, {published[-1].stat().st_size / MIB:.0f} MiB")
        missed = cp_s / cold_s < COLD_TARGET or republish_s / cold_s > REPUBLISH_TARGET
        sys.exit(1 if missed else 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
