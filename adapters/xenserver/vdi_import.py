"""Stream a dynamic VHD into a VDI: ``PUT /import_raw_vdi`` (aiohttp), judged by its task.

xapi answers ``200`` (with a ``task-id`` header) before it reads the body, and tells the
outcome only through the task; a pool coordinator that cannot see the SR answers ``302`` to
the host that can, and the PUT is sent again there with the body from its start. The URLs
carry the session reference, so neither they nor aiohttp's errors (which quote the URL) ever
reach a message or a log: failures are described by status, bytes and xapi's task error only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin

from adapters.base import (
    AdapterError,
    AuthError,
    Backoff,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    ProgressFn,
    RetryableError,
    error_words,
)
from adapters.retry import TRANSIENT_STATUSES, retry_after
from adapters.xenserver.xapi_session import XapiSession, translate_details

CHUNK = 1 << 20
#: progress is reported at most every this fraction of the file
PROGRESS_STEP = 0.02
#: 302s followed (xapi redirects once, to the host that sees the SR)
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: task errors that a new upload would not cure (anything else after a cut-off: retried)
_FINAL = (AuthError, NotFoundError, InsufficientSpaceError)


@dataclass
class _Sent:
    """Bytes handed to the connection by the current PUT (from 0 again after a redirect)."""

    size: int
    bytes: int = 0


async def _body(fh: BinaryIO, sent: _Sent, progress: ProgressFn, what: str) -> AsyncIterator[bytes]:
    reported = -1.0
    sent.bytes = 0
    while chunk := await asyncio.to_thread(fh.read, CHUNK):
        sent.bytes += len(chunk)
        fraction = sent.bytes / sent.size
        if fraction - reported >= PROGRESS_STEP or sent.bytes == sent.size:
            reported = fraction
            await progress(fraction * 0.95, f"uploading {what}: {sent.bytes >> 20} of "
                                            f"{sent.size >> 20} MiB")
        yield chunk


async def import_vhd(session: XapiSession, vdi_ref: str, vdi_name: str, artifact: Path,
                     context: ssl.SSLContext | None, progress: ProgressFn,
                     poll: tuple[float, float]) -> None:
    """Upload ``artifact`` (a VHD) into the VDI. A cut-off upload is a RetryableError (the
    caller sends it again, into the same VDI); xapi's refusal keeps its code."""
    what = f"disk {vdi_name}"
    task = await session.xapi("creating the upload task",
                              lambda x: x.task.create(f"layerbot import {vdi_name}", "import_raw_vdi"))
    try:
        sent = _Sent(artifact.stat().st_size)
        query = urlencode({"session_id": await session.session_ref(), "task_id": task,
                           "vdi": vdi_ref, "format": "vhd"})
        cut: str | None = None
        try:
            status, reason, wait = await _put(f"{session.url}/import_raw_vdi?{query}", artifact,
                                              sent, context, progress, what)
        except Exception as exc:  # aiohttp's errors quote the URL (its session_id): not their text
            if not _is_transport_error(exc):
                raise
            cut = error_words(exc, quote=False)
        else:
            if status != 200:
                await _raise_task_error(session, task, what)
                text = f"XenServer {session.url}: import_raw_vdi refused {what}: HTTP {status} {reason}"
                if status in TRANSIENT_STATUSES:  # sent again whole, into the same VDI
                    raise RetryableError(text, retry_after=wait)
                raise PlatformError(text)
            if sent.bytes < sent.size:
                cut = "the connection closed"
        if cut is not None:
            await _raise_cut_off(session, task, what, sent, cut)
        await _wait_task(session, task, what, poll, progress)
    finally:
        with contextlib.suppress(AdapterError):
            await asyncio.shield(session.xapi("destroying the upload task",
                                              lambda x: x.task.destroy(task)))


def _is_transport_error(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, aiohttp.ClientError | OSError | asyncio.TimeoutError)


async def _put(url: str, artifact: Path, sent: _Sent, context: ssl.SSLContext | None,
               progress: ProgressFn, what: str) -> tuple[int, str, float | None]:
    """PUT the file (again, whole, to where a 302 points); the final status, its reason and
    the seconds of its Retry-After."""
    import aiohttp

    connector = aiohttp.TCPConnector(ssl=context if url.startswith("https:") else False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=600)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(MAX_REDIRECTS + 1):
            # the file is closed here: aiohttp drops the body's generator unfinished on a cut
            with open(artifact, "rb") as fh:
                status, reason, location, wait = await _put_once(
                    http, url, _body(fh, sent, progress, what), sent.size, timeout)
            if location is None:
                return status, reason, wait
            url = urljoin(url, location)
    raise PlatformError(f"import_raw_vdi of {what}: more than {MAX_REDIRECTS} redirects")


async def _put_once(http: Any, url: str, body: AsyncIterator[bytes], size: int, timeout: Any
                    ) -> tuple[int, str, str | None, float | None]:
    """One PUT: its status and reason, where a redirect points (None: no redirect) and the
    seconds of its Retry-After."""
    async with http.put(url, data=body,
                        headers={"Content-Length": str(size),
                                 "Content-Type": "application/octet-stream"},
                        allow_redirects=False, timeout=timeout) as resp:
        location = resp.headers.get("Location")
        wait = retry_after(resp.headers.get("Retry-After"))
        if resp.status in _REDIRECTS and location:
            return resp.status, resp.reason or "", location, wait
        await resp.read()  # xapi closes the connection once it has read the body
        return resp.status, resp.reason or "", None, wait


async def _raise_cut_off(session: XapiSession, task: str, what: str, sent: _Sent, how: str) -> None:
    """The upload was cut off: a RetryableError, unless xapi's task failed for a reason a
    new upload would not cure."""
    status = await session.xapi("reading the upload task", lambda x: x.task.get_status(task),
                                idempotent=True)
    detail = ""
    if status == "failure":
        info = await session.xapi("reading the upload task", lambda x: x.task.get_error_info(task),
                                  idempotent=True)
        error = translate_details(list(info), f"XenServer {session.url}: importing {what}")
        if isinstance(error, _FINAL):
            raise error
        detail = f"; the task failed: {error}"
    raise RetryableError(f"XenServer {session.url}: the upload of {what} was cut off after "
                         f"{sent.bytes} of {sent.size} bytes ({how}){detail}")


async def _raise_task_error(session: XapiSession, task: str, what: str) -> None:
    status = await session.xapi("reading the upload task", lambda x: x.task.get_status(task),
                                idempotent=True)
    if status == "failure":
        info = await session.xapi("reading the upload task", lambda x: x.task.get_error_info(task),
                                  idempotent=True)
        raise translate_details(list(info), f"XenServer {session.url}: importing {what}")


async def _wait_task(session: XapiSession, task: str, what: str, poll: tuple[float, float],
                     progress: ProgressFn) -> None:
    backoff = Backoff(*poll)
    while True:
        status = await session.xapi("reading the upload task", lambda x: x.task.get_status(task),
                                    idempotent=True)
        if status == "success":
            await progress(1.0, f"{what} imported")
            return
        if status in ("failure", "cancelled", "cancelling"):
            await _raise_task_error(session, task, what)
            raise PlatformError(f"XenServer {session.url}: importing {what}: the task was {status}")
        await backoff.sleep()
