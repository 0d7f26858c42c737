"""gce-tar: disk.raw in a gzip-compressed oldgnu tar, built without reading the disk's holes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from compositor.convert import convert, gce_tar_commands
from compositor.errors import CompositorError
from compositor.identity import KeyIdentity

GIB = 1 << 30
MIB = 1 << 20


def sparse_disk(path: Path, size: int, extents: list[tuple[int, int]]) -> int:
    """A sparse file of ``size`` bytes with random data at (offset, length); the data's bytes."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, length in extents:
            fh.seek(offset)
            fh.write(os.urandom(length))
    return sum(length for _, length in extents)


def bytes_read_by(argv: list[str | Path], stdout: Path) -> int:
    """What ``argv`` read with read() calls (/proc/PID/io rchar), taken once it has exited but
    before it is reaped. Its output goes to a file: GNU tar reads nothing when it is /dev/null."""
    with open(stdout, "wb") as out:
        proc = subprocess.Popen([os.fspath(a) for a in argv], stdout=out, stderr=subprocess.PIPE)
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        io = Path(f"/proc/{proc.pid}/io").read_text()
    finally:
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    match = re.search(r"^rchar: (\d+)$", io, re.MULTILINE)
    assert match, io
    return int(match.group(1))


def test_tar_reads_the_data_and_not_the_holes(tmp_path: Path) -> None:
    """A 2 GiB disk holding 3 MiB: tar reads about 3 MiB (seek hole detection), not 2 GiB."""
    folder = tmp_path / "d"
    folder.mkdir()
    data = sparse_disk(folder / "disk.raw", 2 * GIB,
                       [(MIB, MIB), (700 * MIB, MIB), (2 * GIB - MIB, MIB)])
    tar, _ = gce_tar_commands(folder)
    read = bytes_read_by(tar, tmp_path / "out.tar")
    assert read <= 1.1 * data + 64 * 1024, f"tar read {read} bytes for {data} bytes of data"
    assert (tmp_path / "out.tar").stat().st_size < data + MIB


def test_pigz_gets_every_core_this_process_may_use(tmp_path: Path) -> None:
    """Every core of the CPU affinity (a container's or taskset's cores), not of the machine."""
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        _, gzip_argv = gce_tar_commands(tmp_path)
    finally:
        os.sched_setaffinity(0, cores)
    assert Path(gzip_argv[0]).name == "pigz"
    assert gzip_argv[gzip_argv.index("-p") + 1] == "1"
    _, gzip_argv = gce_tar_commands(tmp_path)
    assert gzip_argv[gzip_argv.index("-p") + 1] == str(len(cores))


async def test_the_tarball_lists_disk_raw_of_the_disk_size(tmp_path: Path) -> None:
    raw = tmp_path / "composited.img"
    sparse_disk(raw, 2 * GIB, [(0, MIB), (GIB + 4096, 3 * 4096)])
    out = tmp_path / "disk.tar.gz"
    assert await convert(raw, "gce-tar", out, lambda _: None, KeyIdentity("k")) == 2 * GIB
    listing = subprocess.run(["tar", "-tvzf", out], capture_output=True, text=True, check=True)
    [line] = listing.stdout.splitlines()
    fields = line.split()
    assert (fields[0], fields[1], fields[2], fields[-1]) == ("-rw-r--r--", "0/0", str(2 * GIB),
                                                            "disk.raw")
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", out, "-C", extracted], check=True)
    assert subprocess.run(["cmp", raw, extracted / "disk.raw"]).returncode == 0
    assert not list(tmp_path.glob("*.d")), "the hard-link folder is removed"


async def test_a_disk_that_is_not_whole_gib_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "composited.img"
    sparse_disk(raw, GIB + MIB, [(0, 4096)])
    with pytest.raises(CompositorError, match=r"gce-tar: disk.raw must be a whole number of GiB, "
                                              r"not 1074790400 B"):
        await convert(raw, "gce-tar", tmp_path / "disk.tar.gz", lambda _: None, KeyIdentity("k"))
