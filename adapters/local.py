"""Local folder target: copies the artifact to ``path/<template>/<task-id>.<ext>``.

There is no VM here, so the task goes straight to Done once the file is in place.
The copy skips holes (SEEK_DATA/SEEK_HOLE), so a sparse raw disk stays sparse.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from adapters.base import (
    Capability,
    CatalogPath,
    ConnectorConfig,
    DiskFormat,
    InsufficientSpaceError,
    PlatformError,
    PublishContext,
    Published,
)
from compositor.paths import UnsafePath, join_inside
from compositor.sparse import data_extents
from compositor.spec import FORMAT_EXTENSIONS
from compositor.threads import in_thread

_CHUNK = 8 << 20


class _Stopped(Exception):
    """The copy thread saw the task's cancellation."""


class Config(ConnectorConfig):
    type: Literal["local"]
    path: CatalogPath
    format: DiskFormat = "qcow2"


class Adapter:
    type_name: ClassVar[str] = "local"
    platform: ClassVar[str] = "Local folder"
    capabilities: ClassVar[Capability] = Capability.NONE

    def __init__(self, config: Config) -> None:
        self.config = config

    def disk_format(self) -> DiskFormat:
        return self.config.format

    def destination(self, ctx: PublishContext) -> Path:
        ext = FORMAT_EXTENSIONS[self.config.format]
        try:
            return join_inside(self.config.path, ctx.template, f"{ctx.task_id}.{ext}")
        except UnsafePath as exc:
            raise PlatformError(f"refusing to publish template {ctx.template!r}: {exc}") from None

    async def publish(self, ctx: PublishContext) -> Published:
        dest = self.destination(ctx)
        # Each attempt writes its own partial file: a runner that lost the task may still
        # be copying while the next one starts.
        partial = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(3)}.partial")
        await ctx.record({"partial": str(partial), "file": str(dest)})
        loop = asyncio.get_running_loop()

        def report(fraction: float) -> None:
            asyncio.run_coroutine_threadsafe(ctx.progress(fraction, "copying"), loop)

        stop = threading.Event()
        try:
            await in_thread(stop, self._copy, ctx.artifact, partial, report, stop)
            os.replace(partial, dest)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise InsufficientSpaceError(f"no space left in {self.config.path}") from exc
            raise PlatformError(f"cannot write {dest}: {exc.strerror}") from exc
        except asyncio.CancelledError:
            partial.unlink(missing_ok=True)  # the copy thread has stopped (in_thread waits)
            raise
        size = dest.stat().st_size
        return Published(
            link=dest.resolve().as_uri(),
            summary=f"{dest.name} ({self.config.format}, {size} bytes) in {dest.parent}",
            resource={"file": str(dest)},
        )

    @staticmethod
    def _copy(src: Path, dest: Path, report: Any, stop: threading.Event) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = src.stat().st_size
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            extents = data_extents(fin.fileno(), size)
            total = sum(e - s for s, e in extents) or 1
            done = 0
            for start, end in extents:
                pos = start
                while pos < end:
                    if stop.is_set():
                        raise _Stopped
                    n = os.copy_file_range(fin.fileno(), fout.fileno(), min(_CHUNK, end - pos),
                                           pos, pos)
                    if n == 0:
                        raise OSError(errno.EIO, f"unexpected end of {src}")
                    pos += n
                    done += n
                    report(done / total)
            fout.truncate(size)

    def next_steps(self, published: Published) -> str:
        path = published.resource.get("file", published.link)
        return (
            f"The layered image is in {path}. Copy it to your platform and create a VM from "
            "it; on first boot the guest runs the connector's scripts and shuts down."
        )

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        """Never called: this target has no VM (no WATCH_POWER capability)."""

    async def cleanup(self, resources: dict[str, Any]) -> list[str]:
        """Called only for a publish that did not finish: remove what it wrote."""
        removed = []
        for key in ("partial", "file"):
            path = resources.get(key)
            if path and Path(path).exists():
                Path(path).unlink()
                removed.append(f"file {path}")
        return removed

    async def close(self) -> None:
        """Nothing to release."""
