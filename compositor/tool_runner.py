"""The one way the compositor runs external tools: asyncio subprocesses that die with the task.

Each command gets its own process group. When the awaiting task is cancelled the group gets
SIGINT (tools clean up), then SIGKILL after a grace period.

A process group, not a session (``start_new_session``): with the Linux scheduler's
autogroups (``kernel.sched_autogroup_enabled``, the default on most distributions) every new
session becomes a CPU group of its own, which competes with the caller's whole process as an
equal, whatever its ``nice`` value. Two composites' tools then kept ``layerbot serve``'s event
loop off the CPU for up to 100 ms (its thread runnable but waiting: /proc schedstat). In the
caller's session the tools' niceness counts against the caller's threads, as intended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .errors import ToolFailedError
from .threads import settle

_GRACE_SECONDS = 3.0
_ENV = {"LC_ALL": "C", "LANG": "C"}

OutputCallback = Callable[[str], None]

#: Niceness added to every tool (mke2fs, qemu-img, ...). A long-running service sets it so
#: the tools yield the CPU to its event loop; ``nice`` only lowers priority, so no root.
_niceness = 0


def set_tool_niceness(value: int) -> None:
    global _niceness
    _niceness = max(0, value)


def tool_niceness() -> int:
    return _niceness


def _argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    args = [os.fspath(a) for a in argv]
    return ["nice", "-n", str(_niceness), *args] if _niceness else args


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    ok_codes: tuple[int, ...] = (0,),
    stdout_file: IO[bytes] | None = None,
    on_output: OutputCallback | None = None,
    env: dict[str, str] | None = None,
) -> Finished:
    """Run argv; raise ToolFailedError unless its exit code is in ok_codes.

    stdout goes to stdout_file when given, else it is captured. on_output receives each
    stdout line (split on \\r or \\n), e.g. qemu-img's -p progress.
    """
    args = [os.fspath(a) for a in argv]
    proc = await asyncio.create_subprocess_exec(
        *_argv(args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout_file if stdout_file is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        process_group=0,  # not a new session: see the module docstring
        env={**os.environ, **_ENV, **(env or {})},
    )
    try:
        out, err = await asyncio.gather(
            _read(proc.stdout, on_output), _read(proc.stderr, None)
        )
        code = await proc.wait()
    except BaseException:
        await _kill(proc)
        raise
    if code not in ok_codes:
        raise ToolFailedError(Path(args[0]).name, code, err or out)
    return Finished(code, out, err)


async def read_output(
    argv: Sequence[str | os.PathLike[str]], consume: Callable[[BinaryIO], None]
) -> None:
    """Run argv; ``consume`` (blocking, in a thread) reads its stdout as it is written.

    argv is killed when the awaiting task is cancelled or ``consume`` fails (it then gets
    end of file, so a consumer still reading returns); ToolFailedError when argv fails."""
    read_end, write_end = os.pipe()
    try:
        proc = await _spawn(argv, stdin=None, stdout=write_end)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with open(read_end, "rb") as source:
        finished = asyncio.ensure_future(_finish(proc))
        consumer = asyncio.ensure_future(asyncio.to_thread(consume, source))
        try:
            await asyncio.wait([finished, consumer], return_when=asyncio.FIRST_EXCEPTION)
            if consumer.done():
                consumer.result()  # its failure, before waiting for a tool it may have blocked
            code, err = await finished
            await consumer
        except BaseException:
            await _kill(proc)
            await settle(finished)
            await settle(consumer)
            raise
    if code != 0:
        raise ToolFailedError(Path(os.fspath(argv[0])).name, code, err)


async def _spawn(
    argv: Sequence[str | os.PathLike[str]], *, stdin: int | None, stdout: int | IO[bytes]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *_argv(argv),
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        process_group=0,
        env={**os.environ, **_ENV},
    )


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    err = await _read(proc.stderr, None)
    return await proc.wait(), err


async def _read(stream: asyncio.StreamReader | None, on_line: OutputCallback | None) -> str:
    if stream is None:
        return ""
    chunks: list[str] = []
    pending = ""
    while block := await stream.read(65536):
        text = block.decode(errors="replace")
        if len(chunks) < 256:
            chunks.append(text)
        if on_line is not None:
            pending += text.replace("\r", "\n")
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip():
                    on_line(line)
    return "".join(chunks)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.shield(asyncio.wait_for(proc.wait(), _GRACE_SECONDS))
            return
        except (TimeoutError, asyncio.CancelledError):
            continue
