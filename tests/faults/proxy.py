"""A fault-injecting reverse proxy on 127.0.0.1 (a random port) in front of one upstream, http or
https, on the test's event loop.

A seeded :class:`FaultSchedule` decides, request by request, whether to inject a fault and which:
a status (500, 502, 503, 429 with or without Retry-After), a connection reset mid-body, a stall
past the client's timeout, a truncated response, a connection closed without any answer, or —
over TLS — a certificate change. Status faults and stalls are injected BEFORE forwarding (the
upstream never sees the request); resets, truncations and unanswered closes AFTER forwarding
(the upstream acted, the client does not know it did: what tests an adapter's idempotency).
Request bodies (uploads) are streamed to the upstream, never held whole; responses, which are
small on every API behind it, are read whole so a fault can cut them.
"""

from __future__ import annotations

import asyncio
import enum
import random
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
               "proxy-connection", "te", "trailer", "upgrade"}
_CHUNK = 1 << 16


class Fault(enum.Enum):
    STATUS_500 = "500"
    STATUS_502 = "502"
    STATUS_503 = "503"
    THROTTLED_RETRY_AFTER = "429+Retry-After"
    THROTTLED = "429"
    RESET_MID_BODY = "reset mid-body"
    STALL = "stall"
    TRUNCATED = "truncated"
    #: the upstream acted; the client's connection is closed before a byte of the answer
    UNANSWERED = "closed unanswered"
    #: not drawn by the schedule: :meth:`FaultProxy.change_certificate` switches it on
    CERTIFICATE_CHANGED = "certificate changed"


STATUS_OF = {Fault.STATUS_500: 500, Fault.STATUS_502: 502, Fault.STATUS_503: 503,
             Fault.THROTTLED_RETRY_AFTER: 429, Fault.THROTTLED: 429}
#: faults injected after the upstream has acted
AFTER_FORWARDING = frozenset({Fault.RESET_MID_BODY, Fault.TRUNCATED, Fault.UNANSWERED})
EVERY_FAULT = (Fault.STATUS_500, Fault.STATUS_502, Fault.STATUS_503, Fault.THROTTLED_RETRY_AFTER,
               Fault.THROTTLED, Fault.RESET_MID_BODY, Fault.STALL, Fault.TRUNCATED, Fault.UNANSWERED)


@dataclass
class FaultSchedule:
    """``random.Random(seed)`` draws, per request, a fault with probability ``rate`` from
    ``menu``; ``applies`` limits the requests that can get one (e.g. only the data plane)."""

    seed: int
    rate: float
    menu: tuple[Fault, ...] = EVERY_FAULT
    applies: Callable[[str, str], bool] = lambda method, path: True
    #: seconds in a Retry-After header
    retry_after: int = 1
    enabled: bool = True
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate!r} is not between 0 and 1")
        if not self.menu:
            raise ValueError("the fault menu is empty")
        self._random = random.Random(self.seed)

    def draw(self, method: str, path: str) -> Fault | None:
        if not self.enabled or not self.applies(method, path):
            return None
        # both draws happen for every request that can get a fault: the sequence depends on the
        # seed and the order of requests alone
        hit = self._random.random() < self.rate
        pick = self.menu[self._random.randrange(len(self.menu))]
        return pick if hit else None


@dataclass
class Injection:
    fault: Fault
    method: str
    path: str
    #: what tells this request apart (:func:`request_key`); () matches no later request
    request: tuple[str, ...] = ()
    #: the same request came again later (:attr:`request`): the client tried again
    retried: bool = False


def request_key(method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str],
                per_attempt: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """A request as a retry repeats it: method, path and query (but the ``per_attempt``
    parameters, handles a client makes anew for each try), and for a body its length and
    Content-Range (the next chunk of a resumable upload, another poll of an operation or a
    cleanup's GET of the same path is another request, not this one sent again)."""
    kept = "&".join(f"{k}={v}" for k, v in sorted(query) if k not in per_attempt)
    if method not in ("PUT", "POST", "PATCH"):
        return (method, path, kept)
    return (method, path, kept, headers.get("Content-Length", ""), headers.get("Content-Range", ""))


class FaultProxy:
    """``async with FaultProxy(upstream, schedule) as proxy``: ``proxy.url`` reaches the upstream
    through the faults. ``tls`` (a server context) makes the proxy itself speak https."""

    def __init__(self, upstream: str, schedule: FaultSchedule, *, stall_seconds: float = 2.0,
                 tls: ssl.SSLContext | None = None, upstream_ssl: ssl.SSLContext | bool = False,
                 client_max_size: int = 1 << 20, keepalive_seconds: float = 75.0,
                 per_attempt: Iterable[str] = ()) -> None:
        if stall_seconds > 5:
            raise ValueError("a stall longer than 5 s slows the suite: lower the client's timeout")
        self.upstream = upstream.rstrip("/")
        self.schedule = schedule
        self.stall_seconds = stall_seconds
        self.url = ""
        self.injected: Counter[Fault] = Counter()
        self.injections: list[Injection] = []
        #: query parameters a client makes anew for each try (:func:`request_key`)
        self.per_attempt = frozenset(per_attempt)
        self.forwarded = 0
        self.requests = 0
        self._tls = tls
        self._serving_tls = tls
        self._upstream_ssl = upstream_ssl
        self._client_max_size = client_max_size
        #: an idle kept-alive client connection is closed after this (aiohttp's default: 75 s)
        self._keepalive_seconds = keepalive_seconds
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stalls: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life cycle
    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     keepalive_timeout=self._keepalive_seconds)
        await self._runner.setup()
        if self._tls is not None:
            self._tls.sni_callback = self._choose_certificate
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def stop(self) -> None:
        for stall in list(self._stalls):
            stall.cancel()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ what a test reads
    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    @property
    def retried(self) -> int:
        return sum(1 for injection in self.injections if injection.retried)

    def counts(self) -> dict[str, int]:
        """Injected faults by kind (the kinds' values), for a report."""
        return {fault.value: n for fault, n in sorted(self.injected.items(), key=lambda i: i[0].value)}

    def heal(self) -> None:
        """No more faults from the schedule (the network came back)."""
        self.schedule.enabled = False

    def change_certificate(self, tls: ssl.SSLContext) -> None:
        """New TLS connections get ``tls``'s certificate (an intercepting middlebox, a vCenter
        whose certificate was replaced); connections already open keep theirs."""
        if self._tls is None:
            raise ValueError("the proxy does not terminate TLS: start it with tls=")
        self._serving_tls = tls
        self.injected[Fault.CERTIFICATE_CHANGED] += 1

    def _choose_certificate(self, conn: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if self._serving_tls is not self._tls:
            conn.context = self._serving_tls

    # ------------------------------------------------------------------ the proxy
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        key = request_key(request.method, request.path, request.rel_url.query.items(),
                          request.headers, self.per_attempt)
        for earlier in self.injections:
            if not earlier.retried and earlier.request == key:
                earlier.retried = True
        fault = self.schedule.draw(request.method, request.path)
        if fault is not None:
            self.injected[fault] += 1
            self.injections.append(Injection(fault, request.method, request.path, key))
        if fault in STATUS_OF:
            await _discard(request.content)
            return _status_answer(fault, self.schedule.retry_after)
        if fault is Fault.STALL:
            await _discard(request.content)
            await asyncio.sleep(self.stall_seconds)  # the client gave up meanwhile
            _abort(request)
            raise asyncio.CancelledError  # nothing more to send on an aborted connection
        status, headers, body = await self._forward(request)
        if fault is Fault.RESET_MID_BODY:
            return await _cut(request, status, headers, body, abort=True)
        if fault is Fault.TRUNCATED:
            return await _cut(request, status, headers, body, abort=False)
        if fault is Fault.UNANSWERED:
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # nothing more to send on a closed connection
        return web.Response(status=status, headers=headers, body=body)

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        self.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = request.content.iter_chunked(_CHUNK) if request.body_exists else None
        if body is not None and "Content-Length" in request.headers:
            headers["Content-Length"] = request.headers["Content-Length"]
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=body, allow_redirects=False,
                                         ssl=self._upstream_ssl) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD" and "Content-Length" in answer.headers:
                out["Content-Length"] = answer.headers["Content-Length"]
            if "Location" in out and out["Location"].startswith(self.upstream):
                out["Location"] = self.url + out["Location"][len(self.upstream):]
            return answer.status, out, payload


async def _discard(content: aiohttp.StreamReader) -> None:
    """Read an upload to its end without keeping it, so the client sees the answer rather than
    a connection closed while it was still sending."""
    async for _ in content.iter_chunked(_CHUNK):
        pass


def _status_answer(fault: Fault, retry_after: int) -> web.Response:
    status = STATUS_OF[fault]
    headers = {"Retry-After": str(retry_after)} if fault is Fault.THROTTLED_RETRY_AFTER else {}
    return web.Response(status=status, headers=headers,
                        text=f"injected by the fault proxy: {fault.value}")


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _cut(request: web.Request, status: int, headers: dict[str, str], body: bytes,
               *, abort: bool) -> web.StreamResponse:
    """The upstream's answer announced whole (its Content-Length), sent in part, then the
    connection reset (``abort``) or closed."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(body) + 1  # at least one byte the client waits for in vain
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if abort:
        _abort(request)
    elif request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


def counts_by_kind(proxies: Iterable[FaultProxy]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for proxy in proxies:
        total.update(proxy.counts())
    return dict(total)
