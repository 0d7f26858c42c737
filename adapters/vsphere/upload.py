"""Import a disk through an HttpNfcLease: wait for it, stream the VMDK in, keep it alive.

The lease's properties are read through the PropertyCollector only (reading them with
pyvmomi's attribute accessors also crashes vcsim 0.24). The VMDK is produced on the fly
by :class:`compositor.stream_vmdk.StreamVmdk` and POSTed with chunked transfer encoding
to the device URL, so no file is written and memory stays flat (``upload: sized`` spools
it to a temporary file first and sends a Content-Length instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import PlatformError, PlatformTimeoutError, RetryableError
from adapters.retry import retry_after
from adapters.vsphere.faults import fault_message, fault_name
from adapters.vsphere.inventory import props
from adapters.vsphere.session import VSphereSession
from compositor.stream_vmdk import MEDIA_TYPE, Engine, StreamVmdk, aiter_chunks
from compositor.sweep import BUILD_PREFIX, owner_prefix

log = logging.getLogger(__name__)

Progress = Callable[[float, str], Awaitable[None]]


class ImportLeaseLost(PlatformError):
    """vCenter's HttpNfcLease (the OVF import's) disappeared, e.g. its session expired: the
    import must start over. Not the task store's runner lease (``bot.store.task_store.LeaseLost``)."""

    retryable = True


class UploadRefused(RetryableError):
    """The NFC endpoint answered 429 or 503 (busy): the import may start over, after its
    Retry-After."""


#: HTTP statuses that say "later", not "never"
_BUSY = (429, 503)


@dataclass
class LeaseInfo:
    vm: Any
    device_urls: list[Any]


def lease_props(si: Any, lease: Any) -> dict[str, Any]:
    from pyVmomi import vim

    found = props(si, [lease], vim.HttpNfcLease, ["state", "error", "info"])
    if not found:
        raise ImportLeaseLost("vSphere: the import lease no longer exists")
    return found[0]


async def wait_ready(session: VSphereSession, lease: Any, timeout: float = 600.0) -> LeaseInfo:
    """Wait until the lease is ``ready``; raise with vCenter's message if it fails."""
    deadline = time.monotonic() + timeout
    while True:
        values = await session.call(lambda si: lease_props(si, lease), "reading the import lease",
                                    idempotent=True)
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


async def _lease_call(session: VSphereSession, call: Callable[[], object], doing: str) -> None:
    """One HttpNfcLease method call; a lease that no longer exists raises ImportLeaseLost."""
    def run(si: Any) -> None:
        try:
            call()
        except Exception as exc:
            if fault_name(exc) == "ManagedObjectNotFound":
                raise ImportLeaseLost("vSphere: the import lease was lost "
                                f"({fault_message(exc)})") from exc
            raise

    await session.call(run, doing)


async def set_progress(session: VSphereSession, lease: Any, percent: int) -> None:
    await _lease_call(session, lambda: lease.HttpNfcLeaseProgress(percent),
                      "updating the import lease")


async def complete(session: VSphereSession, lease: Any) -> None:
    await _lease_call(session, lease.HttpNfcLeaseComplete, "completing the import")


async def abort(session: VSphereSession, lease: Any) -> bool:
    """Abort the lease; False if it was already gone or finished."""
    def do_abort(si: Any) -> bool:
        try:
            values = lease_props(si, lease)
            if values.get("state") in ("done", "error"):
                return False
            lease.HttpNfcLeaseAbort()
            return True
        except ImportLeaseLost:
            return False
        except Exception as exc:
            if fault_name(exc) in ("ManagedObjectNotFound", "InvalidState"):
                return False
            raise

    return await session.call(do_abort, "aborting the import")


async def lease_vm(session: VSphereSession, lease_id: str) -> str | None:
    """The moref of the VM lease ``lease_id`` imports into, once vCenter made it (None before,
    or when the lease is gone)."""
    def read(si: Any) -> str | None:
        from pyVmomi import vim

        try:
            info = lease_props(si, vim.HttpNfcLease(lease_id, si._stub)).get("info")
        except ImportLeaseLost:
            return None
        except Exception as exc:
            if fault_name(exc) == "ManagedObjectNotFound":
                return None
            raise
        entity = getattr(info, "entity", None)
        return entity._moId if entity is not None else None

    return await session.call(read, "reading the import lease", idempotent=True)


class _Throttle:
    """Report progress at most once a second or per 1 % step, and keep the lease alive."""

    def __init__(self, session: VSphereSession, lease: Any, progress: Progress,
                 keepalive: float = 5.0) -> None:
        self.session, self.lease, self.progress = session, lease, progress
        self.keepalive = keepalive
        self.last_report = (0.0, -1.0)
        self.last_lease = 0.0

    async def tick(self, fraction: float, note: str, lease_percent: int,
                   final: bool = False) -> None:
        now = time.monotonic()
        when, shown = self.last_report
        if final or now - when >= 1.0 or abs(fraction - shown) >= 0.01:
            self.last_report = (now, fraction)
            await self.progress(fraction, note)
        if final or now - self.last_lease >= self.keepalive:
            self.last_lease = now
            await set_progress(self.session, self.lease, lease_percent)


def _read_file(path: Path, size: int = 4 * 2**20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


async def _spool(stream: StreamVmdk, target: Path, throttle: _Throttle) -> int:
    """Write the whole VMDK to ``target`` first (for ``upload: sized``); keeps the lease alive."""
    chunks = iter(stream)
    with open(target, "wb") as out:
        async with contextlib.aclosing(aiter_chunks(chunks)) as source:
            async for chunk in source:
                await asyncio.to_thread(out.write, chunk)
                await throttle.tick(stream.fraction, "converting the disk to VMDK for vSphere", 0)
    return stream.written


async def upload_disk(session: VSphereSession, lease: Any, device_url: Any, raw: Path,
                      progress: Progress, ssl_ctx: ssl.SSLContext, *, create: bool = False,
                      level: int = 1, engine: Engine = "auto", workers: int | None = None,
                      sized: bool = False, spool_dir: Path | None = None) -> int:
    """Send ``raw`` as a streamOptimized VMDK to the lease's device URL; returns bytes sent.

    By default the VMDK is produced while it is sent (chunked transfer encoding). With
    ``sized`` it is first written to a temporary file in ``spool_dir`` (else ``$TMPDIR``), named
    so that ``sweep_stale`` removes it if this process is killed, and sent with a
    Content-Length, for servers that refuse chunked uploads.
    """
    stream = StreamVmdk(raw, level=level, engine=engine, workers=workers)
    throttle = _Throttle(session, lease, progress)
    spool: Path | None = None
    length: int | None = None
    sent = 0
    try:
        if sized:
            if spool_dir is not None:
                spool_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=owner_prefix(BUILD_PREFIX), suffix=".vmdk",
                                        dir=spool_dir)
            os.close(fd)
            spool = Path(name)
            length = await _spool(stream, spool, throttle)
            chunks: Iterator[bytes] = _read_file(spool)
        else:
            chunks = iter(stream)

        def status() -> tuple[float, str]:
            mib = sent / 2**20
            if length is None:
                return stream.fraction, f"uploading to vSphere: {mib:.0f} MiB sent"
            return sent / length, f"uploading to vSphere: {mib:.0f} of {length / 2**20:.0f} MiB"

        failure: list[BaseException] = []

        async def body() -> AsyncGenerator[bytes, None]:
            nonlocal sent
            async with contextlib.aclosing(aiter_chunks(chunks)) as source:
                async for chunk in source:
                    yield chunk
                    sent += len(chunk)
                    fraction, note = status()
                    try:
                        await throttle.tick(fraction, note, min(99, int(fraction * 100)))
                    except Exception as exc:  # surfaced below, whatever aiohttp makes of it
                        failure.append(exc)
                        raise

        gen = body()
        try:
            await _post(session, device_url, gen, ssl_ctx, create, failure, length)
        finally:
            with contextlib.suppress(RuntimeError):  # still owned by aiohttp's writer
                await gen.aclose()
        await throttle.tick(1.0, status()[1], 99, final=True)
    finally:
        if spool is not None:
            spool.unlink(missing_ok=True)
    log.info("uploaded %s: %d bytes of VMDK", raw.name, sent)
    return sent


async def _post(session: VSphereSession, device_url: Any, body: AsyncIterator[bytes],
                ssl_ctx: ssl.SSLContext, create: bool, failure: list[BaseException],
                length: int | None) -> None:
    import aiohttp

    url = session.device_url(device_url.url)
    headers = {"Content-Type": MEDIA_TYPE}
    if length is not None:
        headers["Content-Length"] = str(length)
    if session.cookie:
        headers["Cookie"] = session.cookie
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=900)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        method = "PUT" if create else "POST"
        try:
            async with http.request(method, url, data=body, headers=headers,
                                    ssl=ssl_ctx) as resp:
                text = await resp.text()
                if resp.status in _BUSY:
                    raise UploadRefused(
                        f"vSphere: uploading the disk failed: HTTP {resp.status} {text[:300]}",
                        retry_after=retry_after(resp.headers.get("Retry-After")))
                if resp.status >= 300:
                    raise PlatformError(
                        f"vSphere: uploading the disk failed: HTTP {resp.status} {text[:300]}")
        except Exception as exc:
            if failure:
                raise failure[0] from None
            if isinstance(exc, aiohttp.ClientError):
                raise PlatformError(f"vSphere: uploading the disk failed: {exc}") from exc
            raise
