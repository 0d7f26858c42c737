"""gcp-storage-emulator (PyPI) on a random loopback port, behind a small aiohttp proxy.

The proxy counts what each upload session is sent, answers injected errors (429 with
Retry-After) instead of forwarding a chunk, checks every non-final chunk is a multiple of
256 KiB, and fixes one emulator bug that matters for resuming: to a status query about a
session that holds nothing, the emulator answers ``Range: bytes=0-0`` (one byte) where GCS
sends no Range; and one for cleanup: the emulator deletes the live object whatever
``generation`` a DELETE names, where GCS answers 404 unless it is that generation.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from adapters.gcp.storage import CHUNK_QUANTUM, StorageAccess
from adapters.retry import RetryPolicy

BUCKET = "layerbot-images"
PROJECT = "layerbot-test"
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_OBJECT = re.compile(r"/storage/v1/b/([^/]+)/o/(.+)")


@dataclass
class Emulator:
    url: str
    #: the emulator's gcp_storage_emulator.storage.Storage (e.g. ``get_file_list(BUCKET)``):
    #: tests read it, not the HTTP API (a blocking call on the event loop that runs the proxy)
    storage: Any


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The emulator's request handler and storage in a *threading* HTTP server: its own
    server answers one connection at a time, and google-cloud-storage's background bucket
    checks (``_bucket_metadata_cache``) then stalled the test's requests for minutes."""
    from gcp_storage_emulator.handlers import buckets
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    store = Storage(use_memory_fs=True)
    buckets.create_bucket(BUCKET, store)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RequestHandler, store))
    httpd.daemon_threads = True
    # a short poll interval: shutdown() waits for serve_forever's next poll
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name="gcs-emulator", daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield Emulator(f"http://{host}:{port}", store)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@dataclass
class Proxy:
    url: str
    #: upload_id -> body lengths of the chunks it was sent (status queries excluded)
    chunks: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: (status, Google's reason, headers) answered, in order, to the next chunk PUTs instead of
    #: forwarding them
    inject: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    injected: int = 0
    #: upload_ids whose session was cancelled (DELETE)
    cancelled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def sent(self) -> int:
        return sum(sum(lengths) for lengths in self.chunks.values())


@pytest.fixture
async def gcs(emulator: Emulator) -> AsyncIterator[Proxy]:
    import aiohttp
    from aiohttp import web

    acked: dict[str, int] = defaultdict(int)
    session = aiohttp.ClientSession(auto_decompress=False)
    proxy = Proxy(url="")

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        upload_id = request.query.get("upload_id")
        content_range = request.headers.get("Content-Range", "")
        chunk = _RANGE.fullmatch(content_range) if upload_id and request.method == "PUT" else None
        if chunk and upload_id:
            proxy.chunks[upload_id].append(len(body))
            final = chunk.group(3) != "*" and int(chunk.group(2)) + 1 == int(chunk.group(3))
            if not final and len(body) % CHUNK_QUANTUM:
                proxy.problems.append(f"a non-final chunk of {len(body)} bytes")
                return web.json_response({"error": {"code": 400, "message": "bad chunk"}},
                                         status=400)
            if proxy.inject:
                status, reason, headers = proxy.inject.pop(0)
                proxy.injected += 1
                error = {"error": {"code": status, "message": "injected by the test proxy",
                                   "errors": [{"reason": reason,
                                               "message": "injected"}]}}
                return web.json_response(error, status=status, headers=headers)
        if upload_id and request.method == "DELETE":
            # the emulator does not implement cancelling a session (501); GCS answers 499
            # (https://cloud.google.com/storage/docs/performing-resumable-uploads#cancel-upload),
            # then 404: the session is gone
            if upload_id in proxy.cancelled:
                return web.json_response({"error": {"code": 404, "message": "No such upload"}},
                                         status=404)
            proxy.cancelled.append(upload_id)
            return web.Response(status=499)
        deleting = _OBJECT.fullmatch(request.path) if request.method == "DELETE" else None
        if deleting and "generation" in request.query:
            # the emulator deletes the live object whatever generation is asked; GCS: 404
            bucket, name = deleting.group(1), unquote(deleting.group(2))
            try:
                live = emulator.storage.get_file_obj(bucket, name)["generation"]
            except Exception:
                live = None
            if str(live) != request.query["generation"]:
                return web.json_response({"error": {"code": 404, "message": "No such object"}},
                                         status=404)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")}
        async with session.request(request.method, emulator.url + request.path_qs, data=body,
                                   headers=headers, allow_redirects=False) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        if upload_id and answer.status == 308:
            held = out.get("Range", "")
            if chunk:
                acked[upload_id] = int(held.rpartition("-")[2]) + 1 if held else 0
            elif held == "bytes=0-0" and acked[upload_id] == 0:  # the emulator's bug
                del out["Range"]
        return web.Response(status=answer.status, body=payload, headers=out)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    proxy.url = f"http://{host}:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()


def access(gcs: Proxy, chunk_size: int = CHUNK_QUANTUM) -> StorageAccess:
    """Anonymous credentials, the proxy's endpoint, 256 KiB chunks, quick retries."""
    from google.auth.credentials import AnonymousCredentials

    return StorageAccess(project=PROJECT, credentials=AnonymousCredentials(), endpoint=gcs.url,
                         chunk_size=chunk_size, timeout=30.0,
                         retry=RetryPolicy(attempts=4, budget=30.0, first_delay=0.05,
                                           max_delay=0.2))
