"""Answers on a request's ``response_url``: one keep-alive session, one render per loop turn.

bolt's ``respond`` opened an aiohttp session, and so a connection (at Slack, a TLS handshake),
for each message and closed it after. Here the connections are kept alive and reused.

Rendering a message (slack_sdk's validating ``to_dict`` of every block, then JSON) is about a
millisecond of Python on the event loop. A burst of /publish answered with one shared plan
has a hundred cards ready in the same loop turn: rendered together they held the loop for
~100 ms, so the next commands' acks and every timer waited. :class:`Turns` renders them one
per turn, between the other callbacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from bot.slack.blocks import Message

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Answers on one response_url: ``respond(message, response_type=..., replace_original=...)``.
Respond = Callable[..., Awaitable[None]]


class Turns:
    """Runs short CPU-bound steps one per event-loop turn, with the callbacks that were ready
    (acks, timers) in between. A step keeps the (fair) lock until the loop has gone round once:
    released at once, the steps ready in the same turn would all find it free."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def run(self, step: Callable[[], T]) -> T:
        async with self._lock:
            result = step()
            await asyncio.sleep(0)
        return result


class ResponseUrls:
    def __init__(self, turns: Turns, timeout: float = 30.0) -> None:
        self.turns = turns
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _shared(self) -> aiohttp.ClientSession:
        if self._closed:  # a session opened now would never be closed
            raise RuntimeError("cannot answer on a response_url: the Slack app is stopping")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    def respond(self, url: str) -> Respond:
        async def send(message: Message, **options: Any) -> None:
            body = await self.turns.run(lambda: json.dumps({**options, **message.payload()}))
            await self.post(url, body)
        return send

    async def post(self, url: str, body: str) -> None:
        """One retry after a connection error: a kept-alive connection the peer has just
        closed fails the first write (slack_sdk's webhook client retries the same way)."""
        headers = {"Content-Type": "application/json;charset=utf-8"}
        for attempt in (1, 2):
            try:
                async with self._shared().post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:  # the URL is a credential: not logged
                        log.warning("an answer on a response_url got HTTP %d", resp.status)
                    return
            except aiohttp.ClientConnectionError:
                # Slack may have accepted the first attempt before the connection broke: the
                # user then reads the message twice. Acceptable: losing the answer is worse,
                # and the usual failure (a kept-alive connection the peer closed while idle)
                # comes before Slack read anything.
                if attempt == 2:
                    raise

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
