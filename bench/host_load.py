"""What the host's CPUs and the bench's disk did between two snapshots: /proc/stat,
/proc/diskstats and the pressure stall information (/proc/pressure, Linux 4.20+). All of it
counts every process on the host, other users' load included."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_SECTOR = 512


@dataclass(frozen=True)
class Snapshot:
    jiffies: int
    busy: int
    iowait: int
    read_bytes: int
    written_bytes: int
    disk_busy_ms: int
    cpu_stall_us: int
    io_stall_us: int


@dataclass(frozen=True)
class Load:
    """Shares of the interval (0..1) and bytes moved on the disk."""

    cpu_busy: float
    iowait: float
    read_bytes: int
    written_bytes: int
    disk_busy: float
    #: some task waited for a CPU / for I/O (PSI "some"); -1 without /proc/pressure
    cpu_stall: float
    io_stall: float


def block_device(folder: Path) -> str:
    """The /proc/diskstats name of the disk holding folder (vda, nvme0n1, ...)."""
    dev = os.stat(folder).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    # a partition's sysfs folder sits inside its disk's: count the whole disk's I/O
    return sys_dev.parent.name if (sys_dev / "partition").exists() else sys_dev.name


def snapshot(device: str) -> Snapshot:
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    fields = next(line.split() for line in Path("/proc/diskstats").read_text().splitlines()
                  if line.split()[2] == device)
    return Snapshot(busy + idle + iowait, busy, iowait, int(fields[5]) * _SECTOR,
                    int(fields[9]) * _SECTOR, int(fields[12]), _stall_us("cpu"), _stall_us("io"))


def _stall_us(resource: str) -> int:
    try:
        some = Path(f"/proc/pressure/{resource}").read_text().splitlines()[0]
    except OSError:
        return -1
    return int(some.rsplit("total=", 1)[1])


def load_between(before: Snapshot, after: Snapshot, seconds: float) -> Load:
    jiffies = max(1, after.jiffies - before.jiffies)

    def stall(a: int, b: int) -> float:
        return -1.0 if a < 0 else (b - a) / 1e6 / seconds

    return Load(
        (after.busy - before.busy) / jiffies, (after.iowait - before.iowait) / jiffies,
        after.read_bytes - before.read_bytes, after.written_bytes - before.written_bytes,
        (after.disk_busy_ms - before.disk_busy_ms) / 1000 / seconds,
        stall(before.cpu_stall_us, after.cpu_stall_us), stall(before.io_stall_us, after.io_stall_us),
    )
