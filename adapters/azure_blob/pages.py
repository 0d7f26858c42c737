"""Upload a fixed VHD into an existing page blob (a managed disk's write SAS), sending only the
non-zero 512-byte pages, in parallel Put Page requests of at most 4 MiB.

Azure's managed-disk upload: the disk is created with ``createOption: Upload`` and
``uploadSizeBytes`` = the VHD file's size (footer included), ``begin_grant_access`` gives a
write SAS to its page blob, which already has that size and reads as zeros; the pages
written are the only ones stored, so a 30 GiB disk holding 3 GiB of data sends about 3 GiB.

Resuming: :func:`present_ranges` lists the pages the blob already holds and
:func:`upload_pages` (``present=``) sends only the others. Present pages are *trusted*, not
read back: Azure writes a Put Page request entirely or not at all, the disk was created empty
by this task, and the VHD comes from a content-addressed cache whose bytes are reproducible
(``compositor/identity.py``), so a page present is a page of this file; reading it back would
cost what sending it again costs. Pages present where the VHD is zero are cleared (Clear Pages
sends no data), so the disk ends equal to the file whatever the blob held.

azure-storage-blob is imported inside the functions, never at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adapters.azure_blob.nonzero import (
    MAX_REQUEST,
    MIB,
    PAGE,
    Range,
    data_extents,
    merged,
    nonzero_runs,
    split,
    subtract,
    total,
)
from adapters.azure_blob.storage_errors import blob_name, translate
from adapters.base import AdapterError, PlatformError, ProgressFn
from adapters.retry import DEFAULT, RetryPolicy, retrying

T = TypeVar("T")
#: Put Page requests at once: each waits on the service (a round trip to Azure's region) more
#: than on this host, so more in flight hide that latency. Against Azurite on loopback it
#: helped in one run (8 -> 31 MiB/s, 32 -> 66) and not in another (7.3 s vs 8.0 s), where the
#: client's CPU per request was the limit. At most 32 x 4 MiB of the file is in memory at once.
CONCURRENCY = 32
#: requests the scanner plans ahead of the senders, per sender
_AHEAD = 2


@dataclass(frozen=True)
class BlobOptions:
    """How to reach the blob: azure-core's ``transport`` (tests: a loopback peer, short
    timeouts), ``connection_verify`` (False, or a CA bundle's path), and the retry policy of
    each request (the SDK's own retries are off: they ignore Retry-After)."""

    transport: Any = None
    connection_verify: bool | str = True
    retry: RetryPolicy = DEFAULT
    #: Put Page requests an upload runs at once
    concurrency: int = CONCURRENCY


@dataclass(frozen=True)
class UploadStats:
    #: the VHD's size
    size: int
    #: bytes in the VHD's non-zero pages
    data_bytes: int
    #: bytes sent in Put Page requests
    sent_bytes: int
    requests: int
    #: non-zero bytes the blob already held (``present``), not sent again
    present_bytes: int
    #: bytes the blob held where the VHD is zero, cleared
    cleared_bytes: int
    seconds: float


async def upload_pages(sas_url: str, vhd: Path, *, progress: ProgressFn | None = None,
                       concurrency: int | None = None, present: Sequence[Range] | None = None,
                       options: BlobOptions | None = None,
                       max_request: int = MAX_REQUEST) -> UploadStats:
    """Write the non-zero pages of ``vhd`` missing from ``present`` (ranges the blob already
    holds, from :func:`present_ranges`) into the page blob at ``sas_url``, ``concurrency``
    requests at a time (default: ``options.concurrency``); clear the pages ``present`` holds
    where the VHD is zero."""
    options = options or BlobOptions()
    concurrency = options.concurrency if concurrency is None else concurrency
    if concurrency < 1 or max_request < PAGE or max_request % PAGE:
        raise ValueError(f"concurrency {concurrency} / max_request {max_request}: out of range")
    started = time.monotonic()
    size = vhd.stat().st_size
    if size % PAGE:
        raise AdapterError(f"{vhd}: {size} bytes is not a whole number of 512-byte pages, "
                           "so it is not a fixed VHD")
    held = merged(present or ())
    name = blob_name(sas_url)
    async with _client(sas_url, options) as blob:
        blob_size = await _call(blob.get_blob_properties, f"reading {name}", options)
        if blob_size.size != size:
            raise PlatformError(f"Azure Storage: {name} is {blob_size.size} bytes, the VHD "
                                f"{vhd.name} {size}: the disk's uploadSizeBytes must be the VHD "
                                "file's size")
        sender = _Sender(blob, vhd, name, options, progress)
        extents = await asyncio.to_thread(_extents, vhd, size)
        sender.planned = total(subtract(extents, held))
        found: list[Range] = []
        plan = split(subtract(_nonzero(vhd, extents, found), held), max_request)
        await sender.run(_batches(plan, concurrency * _AHEAD), concurrency, sender.put)
        clears = list(subtract(held, merged(found)))
        await sender.run(_batches((c for c in clears), concurrency), concurrency, sender.clear)
        await sender.report(final=True)
    data = total(found)
    missing = total(subtract(merged(found), held))
    return UploadStats(size=size, data_bytes=data, sent_bytes=sender.sent,
                       requests=sender.requests, present_bytes=data - missing,
                       cleared_bytes=total(clears), seconds=time.monotonic() - started)


async def present_ranges(sas_url: str, options: BlobOptions | None = None) -> list[Range]:
    """The byte ranges the page blob holds (written and not cleared), merged."""
    opts = options or BlobOptions()
    name = blob_name(sas_url)

    async def listing() -> list[Range]:
        async with _client(sas_url, opts) as blob:
            try:
                return merged([(r.start, r.end + 1) async for r in blob.list_page_ranges()])
            except Exception as exc:
                raise translate(exc, f"listing the pages of {name}") from None

    return await retrying(listing, f"listing the pages of {name}", opts.retry)


async def uploaded_bytes(sas_url: str, vhd: Path, options: BlobOptions | None = None) -> int:
    """How many bytes of ``vhd`` the blob already holds (for ``ResumableUpload``); 0 when the
    blob's size is not the VHD's (not this file's disk: start over)."""
    options = options or BlobOptions()
    name = blob_name(sas_url)
    async with _client(sas_url, options) as blob:
        props = await _call(blob.get_blob_properties, f"reading {name}", options)
    if props.size != vhd.stat().st_size:
        return 0
    return total(await present_ranges(sas_url, options))


class _Sender:
    """The Put Page / Clear Pages requests of one upload, and its progress."""

    def __init__(self, blob: Any, vhd: Path, name: str, options: BlobOptions,
                 progress: ProgressFn | None) -> None:
        self.blob = blob
        self.vhd = vhd
        self.name = name
        self.options = options
        self.progress = progress
        self.planned = 0
        self.sent = 0
        self.requests = 0
        self._reported = -1.0

    async def run(self, batches: AsyncGenerator[list[Range], None], concurrency: int,
                  send: Callable[[Range], Awaitable[None]]) -> None:
        slots = asyncio.Semaphore(concurrency)

        async def one(item: Range) -> None:
            try:
                await send(item)
            finally:
                slots.release()

        try:
            async with contextlib.aclosing(batches), asyncio.TaskGroup() as group:
                async for batch in batches:
                    for item in batch:
                        await slots.acquire()
                        group.create_task(one(item))
        except BaseExceptionGroup as failed:  # the first request that failed, as it is
            raise _first(failed) from None

    async def put(self, item: Range) -> None:
        start, end = item
        data = await asyncio.to_thread(_read, self.vhd, start, end - start)
        if len(data) != end - start:
            raise AdapterError(f"the VHD changed while it was uploaded (short read at {start})")
        await _call(lambda: self.blob.upload_page(data, offset=start, length=end - start),
                    f"writing bytes {start}-{end - 1} of {self.name}", self.options)
        self.sent += end - start
        self.requests += 1
        await self.report()

    async def clear(self, item: Range) -> None:
        start, end = item
        await _call(lambda: self.blob.clear_page(offset=start, length=end - start),
                    f"clearing bytes {start}-{end - 1} of {self.name}", self.options)

    async def report(self, final: bool = False) -> None:
        """At most one note per percent (uploads of a few GiB make thousands of requests)."""
        if self.progress is None:
            return
        fraction = 1.0 if final or not self.planned else min(1.0, self.sent / self.planned)
        if fraction - self._reported < 0.01 and not (final and fraction > self._reported):
            return
        self._reported = fraction
        await self.progress(fraction, f"uploaded {self.sent / MIB:.0f} MiB of data to the disk")


@contextlib.asynccontextmanager
async def _client(sas_url: str, options: BlobOptions) -> AsyncIterator[Any]:
    from azure.storage.blob.aio import BlobClient

    kwargs: dict[str, Any] = {"retry_total": 0, "connection_verify": options.connection_verify}
    if options.transport is not None:
        kwargs["transport"] = options.transport
    try:
        client = BlobClient.from_blob_url(sas_url, **kwargs)
    except ValueError as exc:
        raise AdapterError(f"not a blob URL: {blob_name(sas_url)} ({exc})") from None
    async with client:
        yield client


async def _call(call: Callable[[], Awaitable[T]], doing: str, options: BlobOptions) -> T:
    """One storage request, retried (Retry-After honoured) while it fails transiently."""
    async def attempt() -> T:
        try:
            return await call()
        except Exception as exc:
            raise translate(exc, doing) from None

    return await retrying(attempt, doing, options.retry)


# The file is opened by each function a worker thread runs: a cancelled upload returns while
# such a thread may still be reading, and must not close a descriptor under it.
def _extents(vhd: Path, size: int) -> list[Range]:
    with open(vhd, "rb") as file:
        return data_extents(file.fileno(), size)


def _nonzero(vhd: Path, extents: list[Range], into: list[Range]) -> Iterator[Range]:
    """The VHD's non-zero runs, each also appended to ``into`` (the clears need them all)."""
    with open(vhd, "rb") as file:
        for run in nonzero_runs(file.fileno(), extents):
            into.append(run)
            yield run


def _read(vhd: Path, offset: int, length: int) -> bytes:
    with open(vhd, "rb") as file:
        return os.pread(file.fileno(), length, offset)


async def _batches(items: Generator[Range, None, None], size: int
                   ) -> AsyncGenerator[list[Range], None]:
    """``items`` (a generator that reads the file) advanced on a worker thread, ``size`` at a
    time, so reading and scanning never block the event loop; closed at the end (which
    closes the file), once no thread runs it."""
    try:
        while True:
            step = asyncio.ensure_future(asyncio.to_thread(_take, items, size))
            try:
                batch = await asyncio.shield(step)
            except asyncio.CancelledError:
                await asyncio.wait([step])
                raise
            if not batch:
                return
            yield batch
    finally:
        items.close()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf


def _take(items: Iterator[Range], size: int) -> list[Range]:
    return list(itertools.islice(items, size))
