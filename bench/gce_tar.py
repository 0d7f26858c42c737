"""Benchmark gce-tar: an 8 GiB sparse disk holding 1 GiB of data, against `tar --format=oldgnu -Sczf`.

    .venv/bin/python bench/gce_tar.py                         # 8 GiB disk, 1 GiB of data
    .venv/bin/python bench/gce_tar.py --disk-gib 2 --data-mib 128   # quick smoke run

Both runs archive the same raw file, ``disk.raw``, with the page cache warm
(the raw file was just written: neither run pays for the storage device). For each:
wall time, bytes tar read from the raw file (``rchar`` of /proc/PID/io, taken after tar exits
and before it is reaped: every read() of tar's is of the raw file, bar a few KiB of its own
files; `tar -z` reaps its gzip child, whose reads of the tar stream then count as tar's, so
the stream's length is subtracted there), that ÷ the data bytes (target ≤ 1.1: holes are not
read) and the tarball's size.
The data is half random, half repetitive text, in 16 MiB extents spread over the disk.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compositor.convert import gce_tar_command, gzip_blocks
from compositor.tools import tool_path

MIB = 1 << 20
GIB = 1 << 30
EXTENT = 16 * MIB


@dataclass(frozen=True)
class Run:
    seconds: float
    tar_read: int
    size: int


def make_disk(path: Path, disk: int, data: int) -> int:
    """A sparse file of ``disk`` bytes with ``data`` bytes in EXTENT-sized pieces, evenly spread."""
    rng = random.Random(11)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    text = b" ".join(rng.choice(words) for _ in range(EXTENT // 2 // 5))[: EXTENT // 2]
    count = data // EXTENT
    stride = disk // count
    with open(path, "wb") as fh:
        fh.truncate(disk)
        for i in range(count):
            fh.seek(i * stride)
            fh.write(rng.randbytes(EXTENT // 2) + text[i:] + text[:i])
    return count * EXTENT


def stream_length(tarball: Path) -> int:
    """Bytes of the uncompressed tar stream."""
    total = 0
    with gzip.open(tarball, "rb") as fh:
        while block := fh.read(16 * MIB):
            total += len(block)
    return total


def _finish(tar: subprocess.Popen[bytes], started: float, out: Path) -> Run:
    """Wait for tar; its rchar is read before it is reaped."""
    os.waitid(os.P_PID, tar.pid, os.WEXITED | os.WNOWAIT)
    io = Path(f"/proc/{tar.pid}/io").read_text()
    if tar.wait() != 0:
        raise SystemExit("tar failed")
    seconds = time.perf_counter() - started
    match = re.search(r"^rchar: (\d+)$", io, re.MULTILINE)
    assert match is not None
    return Run(seconds, int(match.group(1)), out.stat().st_size)


def run_gce_tar(folder: Path, out: Path) -> Run:
    """What compositor.convert does: its tar command, its ISA-L gzip of tar's output."""
    started = time.perf_counter()
    tar = subprocess.Popen([os.fspath(a) for a in gce_tar_command(folder)], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    with tar.stdout:
        gzip_blocks(tar.stdout, out, len(os.sched_getaffinity(0)))
    return _finish(tar, started, out)


def run_plain(folder: Path, out: Path) -> Run:
    started = time.perf_counter()
    argv = [tool_path("tar"), "--format=oldgnu", "-Sczf", "-", "-C", os.fspath(folder), "disk.raw"]
    with open(out, "wb") as sink:
        tar = subprocess.Popen(argv, stdout=sink)
    run = _finish(tar, started, out)  # tar -z reaps its gzip, whose reads then count as tar's
    return Run(run.seconds, run.tar_read - stream_length(out), run.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--disk-gib", type=int, default=8)
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: $TMPDIR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gce-", dir=args.dir) as tmp:
        folder = Path(tmp)
        raw = folder / "disk.raw"
        data = make_disk(raw, args.disk_gib * GIB, args.data_mib * MIB)
        print(f"disk: {args.disk_gib} GiB, {data / MIB:.0f} MiB of data "
              f"({os.stat(raw).st_blocks * 512 / MIB:.0f} MiB allocated), "
              f"{len(os.sched_getaffinity(0))} cores")
        ours = run_gce_tar(folder, folder / "gce.tar.gz")
        theirs = run_plain(folder, folder / "plain.tar.gz")
        for name, run in (("gce-tar (tar --hole-detection=seek | ISA-L gzip)", ours),
                          ("tar --format=oldgnu -Sczf", theirs)):
            print(f"{name}: {run.seconds:.1f} s, read {run.tar_read / MIB:.0f} MiB of the raw "
                  f"file = {run.tar_read / data:.3f} x data, tarball {run.size / MIB:.0f} MiB")
        print(f"speed-up: {theirs.seconds / ours.seconds:.2f} x; read ratio (gce-tar): "
              f"{ours.tar_read / data:.3f} (target <= 1.1); size ratio (gce-tar / -Sczf): "
              f"{ours.size / theirs.size:.3f}")


if __name__ == "__main__":
    main()
