"""The child processes of this test process, for tests that check a cancel left none behind.

Session fixtures (Azurite, vcsim, emulators) are children too: a test compares against the
children that were there before it started."""

from __future__ import annotations

import os
import subprocess


def children() -> set[str]:
    """``"pid comm"`` of each live child (ps itself left out)."""
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())], capture_output=True, text=True
    )
    return {" ".join(line.split()) for line in out.stdout.splitlines()
            if line.split()[-1:] != ["ps"]}
