"""The compositor process of compositor.isolated: ``python -m compositor.worker``; runs one
operation (build_image or publish_layer) and exits.

stdin: one JSON request line, then nothing until the parent goes (EOF cancels the work).
stdout: JSON lines, progress then a result or an error. stderr: log records, one JSON object a
line (``{"log": {"level", "logger", "message", "exc"}}``), from ``log_level`` (the parent's) up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from .build import build_image
from .errors import CompositorError
from .firstboot import publish_layer
from .isolated import built_to_json, error_to_json, spec_from_json, spec_to_json
from .tool_runner import set_tool_niceness

#: exit status of a cancelled build
CANCELLED = 130
#: run as ``-m``, this module's own name would be __main__
log = logging.getLogger("compositor.worker")


class Channel:
    """JSON lines to the parent; thread-safe (build_image reports from its threads)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message) + "\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


async def serve(request: dict[str, Any], channel: Channel) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)

    def parent_gone() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed stdin or died
        loop.call_soon_threadsafe(task.cancel)

    threading.Thread(target=parent_gone, daemon=True, name="stdin-watch").start()
    try:
        result = await OPERATIONS[request["op"]](request, channel)
    except CompositorError as exc:
        channel.send({"error": error_to_json(exc)})
        return
    except Exception as exc:  # a bug: the parent reports it as an internal error
        log.exception("%s failed", request["op"])
        channel.send({"crash": f"{type(exc).__name__}: {exc}"})
        return
    channel.send({"result": result})


async def _build_image(request: dict[str, Any], channel: Channel) -> Any:
    spec = spec_from_json(request["spec"])
    maker = None
    if (args := request.get("publish_layer")) is not None:
        maker = functools.partial(publish_layer, spec.layers, spec.filesystem,
                                  [Path(s) for s in args["scripts"]], args["shutdown"],
                                  args["size_gib"])
    built = await build_image(
        spec, work_dir=request["work_dir"],
        cache_dir=request["cache_dir"], ram_scratch=request.get("ram_scratch", True),
        ram_dir=Path(request["ram_dir"]) if request.get("ram_dir") else None,
        progress=lambda note, fraction: channel.send({"progress": [note, fraction]}),
        publish_layer=maker)
    return built_to_json(built)


async def _publish_layer(request: dict[str, Any], channel: Channel) -> Any:
    spec = spec_from_json(request["spec"])
    files, links = await asyncio.to_thread(
        publish_layer, spec.layers, spec.filesystem, [Path(s) for s in request["scripts"]],
        request["shutdown"], request.get("size_gib"))
    encoded = spec_to_json(dataclasses.replace(spec, extra_files=files, extra_symlinks=links))
    return {"files": encoded["extra_files"], "links": encoded["extra_symlinks"]}


class RecordLines(logging.Formatter):
    """A record as one JSON line the parent logs again (compositor.isolated): no traceback
    split over lines, each record at its own level and logger, with the parent's task fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": record.levelno, "logger": record.name,
                 "message": _truncated(record.getMessage())}
        if record.exc_info:
            entry["exc"] = _truncated(self.formatException(record.exc_info))
        return json.dumps({"log": entry})


#: characters of a record's message (and traceback) the child sends: well under the
#: parent's line limit (compositor.isolated.LINE_LIMIT) even when every one is escaped
MAX_RECORD_CHARS = 16 * 1024


def _truncated(text: str) -> str:
    if len(text) <= MAX_RECORD_CHARS:
        return text
    return f"{text[:MAX_RECORD_CHARS]}... ({len(text) - MAX_RECORD_CHARS} more characters not shown)"


OPERATIONS: dict[str, Callable[[dict[str, Any], Channel], Awaitable[Any]]] = {
    "build_image": _build_image,
    "publish_layer": _publish_layer,
}


def main() -> int:
    # The protocol owns the real stdout; anything else printed goes to stderr.
    channel = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)
    request = json.loads(sys.stdin.readline())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RecordLines())
    logging.basicConfig(handlers=[handler], level=int(request.get("log_level") or logging.WARNING))
    niceness = int(request.get("niceness") or 0)
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)  # this whole process, so its tools inherit it
    set_tool_niceness(0)
    try:
        asyncio.run(serve(request, channel))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return CANCELLED
    return 0


if __name__ == "__main__":
    sys.exit(main())
