"""Leftovers of killed builds: name temporary paths after their owner, and sweep the dead ones.

A build's work directory is ``<work_dir>/layerbot-build-<host>-<pid>-<random>`` and its
in-flight cache files are ``<cache_dir>/tmp/tmp-<host>-<pid>-<random><suffix>`` (digest
records: ``<cache_dir>/digests/.tmp-<host>-<pid>-<random>``). Normally the build removes them
itself; a process killed with SIGKILL cannot. sweep_stale removes an entry when

* its owner ran on this host and is no longer alive (or its pid now belongs to a process
  started after the entry was last modified, i.e. the pid was reused), or
* its name does not say who owns it (older versions) or the owner is on another host (a
  shared work or cache directory), and it has not been modified for STALE_AFTER seconds.

Entries of a live owner on this host are kept, whatever their age.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

BUILD_PREFIX = "layerbot-build-"
CACHE_TEMP_PREFIX = "tmp-"
DIGEST_TEMP_PREFIX = ".tmp-"
#: a RAM scratch reservation (compositor.scratch), next to the build folders in RAM
RESERVE_PREFIX = "reserve-"
#: how old an entry of an unknown or remote owner must be before it is swept
STALE_AFTER = 24 * 3600

# <host>-<pid>-<random>[<suffix>]; the random part is tempfile's 8 characters
_OWNER = re.compile(r"(?P<host>[A-Za-z0-9.-]+)-(?P<pid>[0-9]+)-[a-z0-9_]{8}(?:\..*)?")


def host_name() -> str:
    """This host's name as it appears in temporary names (letters, digits, dots, hyphens)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()).strip("-.") or "localhost"


def owner_prefix(prefix: str) -> str:
    """A tempfile prefix naming this process: prefix + '<host>-<pid>-'."""
    return f"{prefix}{host_name()}-{os.getpid()}-"


def sweep_stale(work_dir: Path, cache_dir: Path, *, now: float | None = None,
                ram_root: Path | None = None) -> list[Path]:
    """Remove the work directories and cache temp files of builds whose process is gone (and
    their work directories and reservations in ``ram_root``, the RAM scratch); return what was
    removed. Missing directories are fine."""
    now = time.time() if now is None else now
    host = host_name()
    candidates = [
        *_entries(Path(work_dir), BUILD_PREFIX),
        *(_ram_entries(ram_root) if ram_root is not None else []),
        # every entry of tmp/ is a temp file; older versions named them tmp<random><suffix>
        *((path, rest.removeprefix(CACHE_TEMP_PREFIX))
          for path, rest in _entries(Path(cache_dir) / "tmp", "")),
        *_entries(Path(cache_dir) / "digests", DIGEST_TEMP_PREFIX),
    ]
    return _sweep(candidates, host, now)


def sweep_ram_root(root: Path) -> list[Path]:
    """Remove the work folders and reservations of dead builds in a RAM scratch root."""
    return _sweep(_ram_entries(root), host_name(), time.time())


def _ram_entries(root: Path) -> list[tuple[Path, str]]:
    return _entries(root, BUILD_PREFIX) + _entries(root, RESERVE_PREFIX)


def _sweep(candidates: list[tuple[Path, str]], host: str, now: float) -> list[Path]:
    removed: list[Path] = []
    for path, owned_part in candidates:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not _stale(owned_part, st.st_mtime, host, now):
            continue
        if _remove(path):
            removed.append(path)
    return removed


def reserved_by_live_builds(folder: Path, prefix: str) -> int:
    """The sum of the byte counts in folder's ``<prefix><owner>`` files whose owner lives."""
    now, host, total = time.time(), host_name(), 0
    for path, owned_part in _entries(folder, prefix):
        try:
            if not _stale(owned_part, path.lstat().st_mtime, host, now):
                total += int(path.read_text() or 0)
        except (OSError, ValueError):
            continue
    return total


def _entries(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    """(path, the part of its name after prefix) of folder's entries that start with prefix."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(folder / n, n[len(prefix):]) for n in sorted(names) if n.startswith(prefix)]


def _stale(owned_part: str, mtime: float, host: str, now: float) -> bool:
    match = _OWNER.fullmatch(owned_part)
    if match is None or match["host"] != host:
        return now - mtime > STALE_AFTER
    return not _owner_alive(int(match["pid"]), mtime)


def _owner_alive(pid: int, mtime: float) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = _process_start(pid)
    # a process started after the entry was last written cannot have created it: the pid was
    # reused (a minute of slack for the clock being set since the process started)
    return started is None or started <= mtime + 60


def _process_start(pid: int) -> float | None:
    """When the process started (epoch seconds), from /proc; None when unknown."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = int(stat_line.rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return True
    except OSError:
        with contextlib.suppress(OSError):
            shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    return True
