"""A loopback HTTP proxy in front of Azurite that counts the Put Page requests it forwards and
can bend them: answer 429 (throttling, with Retry-After) or hold them (a connection cut off
mid-upload). Runs on the test's event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
_THROTTLED = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>TooManyRequests</Code>'
              b"<Message>The request is being throttled.</Message></Error>")


@dataclass
class StorageProxy:
    upstream: str
    #: body sizes of the Put Page (update) requests forwarded, in arrival order
    put_sizes: list[int] = field(default_factory=list)
    #: Put Page requests answered 429 from here on
    throttle: int = 0
    retry_after: str = "7"
    throttled: int = 0
    #: Put Page requests forwarded before the next ones are held (None: none held)
    hold_after: int | None = None
    #: set once a Put Page request is held
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    #: requests being read or forwarded to Azurite (held ones not counted)
    forwarding: int = 0
    endpoint: str = ""
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def sent_bytes(self) -> int:
        return sum(self.put_sizes)

    async def start(self) -> None:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        self._released.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, sas_url: str) -> str:
        """``sas_url`` (at Azurite) through this proxy."""
        return sas_url.replace(self.upstream, self.endpoint, 1)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        # counted from the first byte: a request whose body is still being read is on its way
        self.forwarding += 1
        try:
            body = await request.read()
            if request.method == "PUT" and request.query.get("comp") == "page" \
                    and request.headers.get("x-ms-page-write") == "update":
                if self.throttle > 0:
                    self.throttle -= 1
                    self.throttled += 1
                    return web.Response(status=429, body=_THROTTLED, content_type="application/xml",
                                        headers={"Retry-After": self.retry_after,
                                                 "x-ms-error-code": "TooManyRequests"})
                if self.hold_after is not None and len(self.put_sizes) >= self.hold_after:
                    self.holding.set()
                    self.forwarding -= 1  # held: never forwarded
                    try:
                        await self._released.wait()  # the proxy is stopping
                    finally:
                        self.forwarding += 1
                    return web.Response(status=503)
                self.put_sizes.append(len(body))
            assert self._session is not None
            return await self._send(request, body)
        finally:
            self.forwarding -= 1

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until no forwarded request is still on its way (a client that gave up does not
        stop one already sent, as with the real service)."""
        async with asyncio.timeout(timeout):
            await asyncio.sleep(0.1)  # a request fully sent may not have reached the handler yet
            while self.forwarding:
                await asyncio.sleep(0.05)

    async def _send(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=body) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD":  # the blob's size is its Content-Length, with no body
                out["Content-Length"] = answer.headers.get("Content-Length", "0")
                return web.Response(status=answer.status, headers=out)
            return web.Response(status=answer.status, body=payload, headers=out)
