"""Peak resident memory of a process tree, sampled from /proc while it runs.

getrusage(RUSAGE_CHILDREN) gives only the largest single descendant; a composite runs its
compositor process, mke2fs or debugfs and qemu-img side by side (and several composites run
at once), so the host needs their sum. A thread reads VmRSS of every descendant every
`interval` seconds and keeps the peak sum and the peak single process. A process living
shorter than one interval can be missed; RSS counts shared pages once per process.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRss:
    pid: int
    name: str
    kib: int


def descendants(root: int) -> list[int]:
    """Pids of every process below root (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def process_rss(pid: int) -> ProcessRss | None:
    """Name and VmRSS of pid; None once it is gone. A zombie has no VmRSS: 0."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kib = int(fields["VmRSS"].split()[0]) if "VmRSS" in fields else 0
    return ProcessRss(pid, fields.get("Name", "?").strip(), kib)


class TreeRss:
    """with TreeRss() as rss: ...; then rss.peak_total_kib and rss.peak_process.

    Samples the descendants of root (this process by default), and root itself when
    include_root: a bench's own memory is its data generator's, not the builds'.
    """

    def __init__(self, root: int | None = None, *, include_root: bool = False,
                 interval: float = 0.05) -> None:
        self.root = os.getpid() if root is None else root
        self.include_root = include_root
        self.interval = interval
        self.samples = 0
        self.peak_total_kib = 0
        self.peak_process = ProcessRss(0, "-", 0)
        #: the processes sampled when the sum peaked
        self.at_peak: list[ProcessRss] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def sample(self) -> None:
        pids = descendants(self.root) + ([self.root] if self.include_root else [])
        found = [rss for rss in map(process_rss, pids) if rss is not None]
        total = sum(rss.kib for rss in found)
        if total > self.peak_total_kib or not self.samples:
            self.peak_total_kib, self.at_peak = total, found
        for rss in found:
            if rss.kib > self.peak_process.kib:
                self.peak_process = rss
        self.samples += 1

    def at_peak_by_name(self) -> dict[str, int]:
        """KiB per process name at the peak, largest first."""
        sums: dict[str, int] = {}
        for rss in self.at_peak:
            sums[rss.name] = sums.get(rss.name, 0) + rss.kib
        return dict(sorted(sums.items(), key=lambda item: -item[1]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
