"""External tools run in a process group of their own but in the caller's session, so the
caller's CPU group (a scheduler autogroup is one per session) and their niceness apply."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from compositor import tool_runner

PROBE = """
import json, os, pathlib
group = pathlib.Path("/proc/self/autogroup")
print(json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
                  "nice": os.nice(0),
                  "autogroup": (group.read_text().split() or [None])[0] if group.exists() else None}))
"""


def _autogroup() -> str | None:
    group = Path("/proc/self/autogroup")
    # Empty (or absent) where the kernel runs without scheduler autogroups, as on CI.
    return (group.read_text().split() or [None])[0] if group.exists() else None


async def test_tool_has_its_own_group_in_the_callers_session() -> None:
    done = await tool_runner.run([sys.executable, "-c", PROBE])
    child = json.loads(done.stdout)
    assert child["pgid"] == child["pid"]  # cancellation signals the whole group
    assert child["sid"] == os.getsid(0)  # no new session: no autogroup of its own
    assert child["autogroup"] == _autogroup()


async def test_tool_niceness_applies() -> None:
    tool_runner.set_tool_niceness(5)
    try:
        done = await tool_runner.run([sys.executable, "-c", PROBE])
    finally:
        tool_runner.set_tool_niceness(0)
    assert json.loads(done.stdout)["nice"] == os.nice(0) + 5
