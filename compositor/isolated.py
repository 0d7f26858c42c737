"""build_image and publish_layer (the guest inspection) in a separate Python process, so their
Python work (scanning, hashing, merging thousands of files, reading a tar layer's index)
never holds the caller's GIL: ``layerbot serve``'s event loop keeps answering Slack while
composites run.

The child is ``python -m compositor.worker``, one per call. It reads one JSON request line on
stdin (the operation and its arguments, the niceness) and writes JSON lines on stdout:
``{"progress": [note, fraction]}``, then ``{"result": ...}`` or ``{"error": {...}}``. A compositor error is
raised here again as the same class with the same message and attributes. Its log records
(JSON lines on its stderr, from this process's level up) are logged here again, each at its
level and logger; anything else it writes to stderr is logged a line at a time, as a warning.

Cancelling the awaiting task sends the child SIGTERM: it cancels its work (build_image kills
its tools and removes its temporary files) and exits; after a grace period it gets SIGKILL.
When this process dies, the child sees stdin close and cancels its work the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CompositorError
from .firstboot import PublishLayer, ShutdownMode
from .spec import BuiltImage, ExtraFile, Filesystem, ImageSpec, LayerSource, ProgressCallback
from .tool_runner import tool_niceness

log = logging.getLogger(__name__)
#: the longest line read from the child: a result (stdout) lists a publish layer's files, and
#: a stderr line can be a tool's long output (the child truncates its own records)
LINE_LIMIT = 16 * 1024 * 1024

#: How long a cancelled child may take to clean up before it is killed.
GRACE_SECONDS = 30.0
_ROOT = Path(__file__).resolve().parents[1]


class WorkerCrashed(Exception):
    """The compositor process ended without a result (killed, or a bug outside build_image)."""


# ------------------------------------------------------------------ (de)serialization
def spec_to_json(spec: ImageSpec) -> dict[str, Any]:
    return {
        "layers": [[layer.name, layer.kind, os.fspath(layer.source)] for layer in spec.layers],
        "size_gib": spec.size_gib,
        "format": spec.format,
        "filesystem": spec.filesystem,
        "extra_files": [[f.path, base64.b64encode(f.content).decode("ascii"), f.mode, f.uid, f.gid]
                        for f in spec.extra_files],
        "extra_symlinks": [list(link) for link in spec.extra_symlinks],
    }


def spec_from_json(data: dict[str, Any]) -> ImageSpec:
    return ImageSpec(
        layers=tuple(LayerSource(name, kind, Path(source))
                     for name, kind, source in data["layers"]),
        size_gib=data["size_gib"],
        format=data["format"],
        filesystem=data["filesystem"],
        extra_files=tuple(ExtraFile(path, base64.b64decode(content), mode, uid, gid)
                          for path, content, mode, uid, gid in data["extra_files"]),
        extra_symlinks=tuple((path, target) for path, target in data["extra_symlinks"]),
    )


def built_to_json(built: BuiltImage) -> dict[str, Any]:
    return {"path": os.fspath(built.path), "format": built.format,
            "virtual_size": built.virtual_size, "file_size": built.file_size,
            "cache_key": built.cache_key, "cache_hit": built.cache_hit,
            "layer_digests": built.layer_digests}


def built_from_json(data: dict[str, Any]) -> BuiltImage:
    return BuiltImage(path=Path(data["path"]), format=data["format"],
                      virtual_size=data["virtual_size"], file_size=data["file_size"],
                      cache_key=data["cache_key"], cache_hit=data["cache_hit"],
                      layer_digests=dict(data["layer_digests"]))


def error_to_json(exc: CompositorError) -> dict[str, Any]:
    attrs = {k: v for k, v in vars(exc).items() if _plain(v)}
    return {"class": f"{type(exc).__module__}:{type(exc).__qualname__}", "message": str(exc),
            "attrs": attrs}


def error_from_json(data: dict[str, Any]) -> CompositorError:
    """The same class (CompositorError if it is not known here), message and attributes."""
    cls = _error_classes().get(data["class"], CompositorError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, data["message"])
    vars(exc).update(data.get("attrs") or {})
    return exc


def _error_classes() -> dict[str, type[CompositorError]]:
    found: dict[str, type[CompositorError]] = {}
    pending: list[type[CompositorError]] = [CompositorError]
    while pending:
        cls = pending.pop()
        found[f"{cls.__module__}:{cls.__qualname__}"] = cls
        pending += cls.__subclasses__()
    return found


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# ------------------------------------------------------------------ the parent's side
#: the rest of compositor.firstboot.publish_layer's arguments: scripts, shutdown, size_gib
PublishLayerArgs = tuple[Sequence[Path], ShutdownMode, int | None]


async def build_image_isolated(
    spec: ImageSpec, *, work_dir: Path, cache_dir: Path,
    progress: ProgressCallback | None = None, ram_scratch: bool = True,
    ram_dir: Path | None = None, publish_layer: PublishLayerArgs | None = None,
) -> BuiltImage:
    """compositor.build_image(spec, ...) run by a child process; same result and errors.
    With ``publish_layer`` (scripts, shutdown, size_gib), the child makes the spec's publish
    layer (compositor.firstboot.publish_layer) while it hashes and extracts the layers.

    ``progress`` is called from the event loop (build_image also calls it from threads).
    """
    result = await _in_child({"op": "build_image", "spec": spec_to_json(spec),
                              "work_dir": os.fspath(work_dir), "cache_dir": os.fspath(cache_dir),
                              "ram_scratch": ram_scratch,
                              "ram_dir": os.fspath(ram_dir) if ram_dir else None,
                              "publish_layer": None if publish_layer is None else {
                                  "scripts": [os.fspath(p) for p in publish_layer[0]],
                                  "shutdown": publish_layer[1], "size_gib": publish_layer[2]}},
                             progress)
    return built_from_json(result)


async def publish_layer_isolated(
    layers: Sequence[LayerSource], filesystem: Filesystem, scripts: Sequence[Path],
    shutdown: ShutdownMode, size_gib: int | None = None,
) -> PublishLayer:
    """compositor.firstboot.publish_layer(...) run by a child process (reading a big tar
    layer's index is seconds of Python); same result and errors (GuestOSError)."""
    probe = ImageSpec(layers=tuple(layers), size_gib=1, format="raw", filesystem=filesystem)
    result = await _in_child({"op": "publish_layer", "spec": spec_to_json(probe),
                              "scripts": [os.fspath(s) for s in scripts], "shutdown": shutdown,
                              "size_gib": size_gib}, None)
    files = spec_from_json({**spec_to_json(probe), "extra_files": result["files"],
                            "extra_symlinks": result["links"]})
    return files.extra_files, files.extra_symlinks


async def _in_child(request: dict[str, Any], progress: ProgressCallback | None) -> Any:
    request["niceness"] = tool_niceness()
    request["log_level"] = logging.getLogger().getEffectiveLevel()
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "compositor.worker",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": path}, limit=LINE_LIMIT,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    outcome: dict[str, Any] = {}
    readers = asyncio.ensure_future(asyncio.gather(
        _read_messages(proc.stdout, progress, outcome), _log_stderr(proc.stderr, proc.pid)))
    try:
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        # stdin stays open: the child cancels its work when it closes (this process died)
        await asyncio.shield(readers)
        code = await proc.wait()
    except BaseException:
        await _stop(proc, readers)
        raise
    finally:
        proc.stdin.close()
    if "result" in outcome:
        return outcome["result"]
    if "error" in outcome:
        raise error_from_json(outcome["error"])
    if "crash" in outcome:
        raise WorkerCrashed(outcome["crash"])
    raise WorkerCrashed(f"the compositor process exited with code {code} and no result")


async def _read_messages(stream: asyncio.StreamReader, progress: ProgressCallback | None,
                         outcome: dict[str, Any]) -> None:
    while line := await stream.readline():
        message = json.loads(line)
        if "progress" in message:
            if progress is not None:
                note, fraction = message["progress"]
                progress(note, fraction)
        else:
            outcome.update(message)


async def _log_stderr(stream: asyncio.StreamReader, pid: int) -> None:
    """Logs the child's stderr until it closes; never fails (a log line is no reason to fail a
    build). Runs in the awaiting task's context: the records carry its task fields."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # longer than LINE_LIMIT: readline dropped it (a tool's output)
            log.warning("compositor process %d: a stderr line over %d bytes was not logged",
                        pid, LINE_LIMIT)
            continue
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if text:
            try:
                _log_child_line(pid, text)
            except Exception:  # logging it must not fail the build
                log.exception("compositor process %d: could not log a stderr line", pid)


def _log_child_line(pid: int, text: str) -> None:
    """One of the child's records (compositor.worker.RecordLines) again, or the line as a
    warning (a tool or the interpreter writing to stderr)."""
    try:
        entry = json.loads(text)["log"]
        name, level, message = str(entry["logger"]), int(entry["level"]), str(entry["message"])
        exc = entry.get("exc")
    except (ValueError, TypeError, KeyError):
        log.warning("compositor process %d: %s", pid, text)
        return
    logger = logging.getLogger(name)
    if logger.isEnabledFor(level):
        record = logger.makeRecord(name, level, __file__, 0, "compositor process %d: %s",
                                   (pid, message), None)
        record.exc_text = str(exc) if exc else None
        logger.handle(record)


async def _stop(proc: asyncio.subprocess.Process, readers: asyncio.Future[Any]) -> None:
    """SIGTERM (the child cancels its build and cleans up), SIGKILL after the grace period;
    waits for the child even if the caller is cancelled again."""
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, None)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        waiting = asyncio.ensure_future(asyncio.wait_for(proc.wait(), wait))
        while not waiting.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([waiting])
        if not waiting.cancelled() and waiting.exception() is None:
            break
    while not readers.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([readers])
    if not readers.cancelled():
        readers.exception()
