"""Import a disk through an HttpNfcLease: wait for it, stream the VMDK in, keep it alive.

The lease's properties are read through the PropertyCollector only (reading them with
pyvmomi's attribute accessors also crashes vcsim 0.24). The VMDK is produced on the fly
by :class:`compositor.stream_vmdk.StreamVmdk` and POSTed with chunked transfer encoding
to the device URL, so no file is written and memory stays flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import PlatformError, PlatformTimeoutError
from adapters.vsphere_errors import fault_message, fault_name
from adapters.vsphere_inventory import props
from adapters.vsphere_session import VSphereSession
from compositor.stream_vmdk import MEDIA_TYPE, StreamVmdk, aiter_chunks

log = logging.getLogger(__name__)

Progress = Callable[[float, str], Awaitable[None]]


class LeaseLost(PlatformError):
    """The lease disappeared (its session expired); the import must start over."""


@dataclass
class LeaseInfo:
    vm: Any
    device_urls: list[Any]


def lease_props(si: Any, lease: Any) -> dict[str, Any]:
    from pyVmomi import vim

    found = props(si, [lease], vim.HttpNfcLease, ["state", "error", "info"])
    if not found:
        raise LeaseLost("vSphere: the import lease no longer exists")
    return found[0]


async def wait_ready(session: VSphereSession, lease: Any, timeout: float = 600.0) -> LeaseInfo:
    """Wait until the lease is ``ready``; raise with vCenter's message if it fails."""
    deadline = time.monotonic() + timeout
    while True:
        values = await session.call(lambda si: lease_props(si, lease), "reading the import lease")
        state = values.get("state")
        if state == "ready":
            info = values["info"]
            return LeaseInfo(vm=info.entity, device_urls=list(info.deviceUrl or []))
        if state == "error":
            error = values.get("error")
            raise PlatformError(f"vSphere: the import failed: {fault_message(error)}")
        if state == "done":
            raise PlatformError("vSphere: the import lease ended before the upload")
        if time.monotonic() > deadline:
            raise PlatformTimeoutError("vSphere: the import lease did not become ready")
        await asyncio.sleep(0.5)


async def set_progress(session: VSphereSession, lease: Any, percent: int) -> None:
    def progress(si: Any) -> None:
        try:
            lease.HttpNfcLeaseProgress(percent)
        except Exception as exc:
            if fault_name(exc) == "ManagedObjectNotFound":
                raise LeaseLost("vSphere: the import lease was lost "
                                f"({fault_message(exc)})") from exc
            raise

    await session.call(progress, "updating the import lease")


async def complete(session: VSphereSession, lease: Any) -> None:
    def done(si: Any) -> None:
        try:
            lease.HttpNfcLeaseComplete()
        except Exception as exc:
            if fault_name(exc) == "ManagedObjectNotFound":
                raise LeaseLost("vSphere: the import lease was lost "
                                f"({fault_message(exc)})") from exc
            raise

    await session.call(done, "completing the import")


async def abort(session: VSphereSession, lease: Any) -> bool:
    """Abort the lease; False if it was already gone or finished."""
    def do_abort(si: Any) -> bool:
        try:
            values = lease_props(si, lease)
            if values.get("state") in ("done", "error"):
                return False
            lease.HttpNfcLeaseAbort()
            return True
        except LeaseLost:
            return False
        except Exception as exc:
            if fault_name(exc) in ("ManagedObjectNotFound", "InvalidState"):
                return False
            raise

    return await session.call(do_abort, "aborting the import")


class _Throttle:
    """Report progress at most once a second or per 1 % step, and keep the lease alive."""

    def __init__(self, session: VSphereSession, lease: Any, progress: Progress,
                 stream: StreamVmdk, keepalive: float = 5.0) -> None:
        self.session, self.lease, self.progress, self.stream = session, lease, progress, stream
        self.keepalive = keepalive
        self.last_report = (0.0, -1.0)
        self.last_lease = 0.0

    async def tick(self, final: bool = False) -> None:
        now, fraction = time.monotonic(), self.stream.fraction
        when, shown = self.last_report
        if final or now - when >= 1.0 or fraction - shown >= 0.01:
            self.last_report = (now, fraction)
            mib = self.stream.written / 2**20
            await self.progress(fraction, f"uploading to vSphere: {mib:.0f} MiB sent")
        if final or now - self.last_lease >= self.keepalive:
            self.last_lease = now
            await set_progress(self.session, self.lease, min(99, int(fraction * 100)))


async def upload_disk(session: VSphereSession, lease: Any, device_url: Any, raw: Path,
                      progress: Progress, ssl_ctx: ssl.SSLContext, *, create: bool = False,
                      level: int = 1, workers: int | None = None) -> int:
    """Stream ``raw`` as a streamOptimized VMDK into the lease's device URL; bytes sent."""
    stream = StreamVmdk(raw, level=level, workers=workers)
    throttle = _Throttle(session, lease, progress, stream)
    chunks = iter(stream)

    failure: list[BaseException] = []

    async def body() -> Any:
        async with contextlib.aclosing(aiter_chunks(chunks)) as source:
            async for chunk in source:
                yield chunk
                try:
                    await throttle.tick()
                except Exception as exc:  # surfaced below, whatever aiohttp makes of it
                    failure.append(exc)
                    raise

    gen = body()
    try:
        return await _post(session, device_url, gen, throttle, ssl_ctx, create, failure, stream,
                           raw)
    finally:
        with contextlib.suppress(RuntimeError):  # still owned by aiohttp's writer
            await gen.aclose()


async def _post(session: VSphereSession, device_url: Any, body: Any, throttle: _Throttle,
                ssl_ctx: ssl.SSLContext, create: bool, failure: list[BaseException],
                stream: StreamVmdk, raw: Path) -> int:
    import aiohttp

    url = session.device_url(device_url.url)
    headers = {"Content-Type": MEDIA_TYPE}
    if session.cookie:
        headers["Cookie"] = session.cookie
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=900)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        method = "PUT" if create else "POST"
        try:
            async with http.request(method, url, data=body, headers=headers,
                                    ssl=ssl_ctx) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise PlatformError(
                        f"vSphere: uploading the disk failed: HTTP {resp.status} {text[:300]}")
        except Exception as exc:
            if failure:
                raise failure[0] from None
            if isinstance(exc, aiohttp.ClientError):
                raise PlatformError(f"vSphere: uploading the disk failed: {exc}") from exc
            raise
    await throttle.tick(final=True)
    log.info("uploaded %s: %d bytes of VMDK", raw.name, stream.written)
    return stream.written
