"""Stream a dynamic VHD into a VDI: ``PUT /import_raw_vdi`` (aiohttp), followed by its task.

The URL carries the session reference, so neither it nor aiohttp's errors (which quote the
URL) ever reach a message or a log: failures are described by status, bytes and xapi's task
error only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from adapters.base import AdapterError, Backoff, PlatformError, ProgressFn, RetryableError
from adapters.xenserver.xapi_session import XapiSession, translate_details

CHUNK = 1 << 20
#: progress is reported at most every this fraction of the file
PROGRESS_STEP = 0.02


async def _body(path: Path, size: int, sent: list[int], progress: ProgressFn, what: str
                ) -> AsyncIterator[bytes]:
    reported = -1.0
    with open(path, "rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
            sent[0] += len(chunk)
            fraction = sent[0] / size
            if fraction - reported >= PROGRESS_STEP or sent[0] == size:
                reported = fraction
                await progress(fraction * 0.95, f"uploading {what}: {sent[0] >> 20} of "
                                                f"{size >> 20} MiB")


async def import_vhd(session: XapiSession, vdi_ref: str, vdi_name: str, artifact: Path,
                     context: ssl.SSLContext | None, progress: ProgressFn,
                     poll: tuple[float, float]) -> None:
    """Upload ``artifact`` (a VHD) into the VDI; raise the task's error when xapi refused it."""
    import aiohttp

    what = f"disk {vdi_name}"
    task = await session.xapi("creating the upload task",
                              lambda x: x.task.create(f"layerbot import {vdi_name}", "import_raw_vdi"))
    try:
        size = artifact.stat().st_size
        query = urlencode({"session_id": session.session_ref(), "task_id": task, "vdi": vdi_ref,
                           "format": "vhd"})
        sent = [0]
        connector = aiohttp.TCPConnector(ssl=context if session.url.startswith("https:") else False)
        try:
            async with aiohttp.ClientSession(connector=connector) as http, http.put(
                    f"{session.url}/import_raw_vdi?{query}",
                    data=_body(artifact, size, sent, progress, what),
                    headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=600)) as resp:
                status, reason = resp.status, resp.reason
                await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            await _raise_task_error(session, task, what)
            raise RetryableError(f"XenServer {session.url}: the upload of {what} was cut off after "
                                 f"{sent[0]} of {size} bytes ({type(exc).__name__})") from None
        if status != 200:
            await _raise_task_error(session, task, what)
            raise PlatformError(f"XenServer {session.url}: import_raw_vdi refused {what}: HTTP "
                                f"{status} {reason}")
        await _wait_task(session, task, what, poll, progress)
    finally:
        with contextlib.suppress(AdapterError):
            await asyncio.shield(session.xapi("destroying the upload task",
                                              lambda x: x.task.destroy(task)))


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
