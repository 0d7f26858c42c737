"""Answers on a request's ``response_url`` through one aiohttp session for the whole app.

bolt's ``respond`` opens a session, and so a connection (a TLS handshake at Slack), for each
message and closes it after; a burst of commands paid that on the event loop once per card.
Here the connections to Slack's hooks host are kept alive and reused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

#: Answers on one response_url: ``respond(text=..., blocks=..., response_type=...,
#: replace_original=...)`` as bolt's ``respond`` takes them.
Respond = Callable[..., Awaitable[WebhookResponse]]


class ResponseUrls:
    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _shared(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    def respond(self, url: str) -> Respond:
        async def send(**message: Any) -> WebhookResponse:
            client = AsyncWebhookClient(url, session=self._shared(), timeout=int(self.timeout))
            return await client.send(**message)
        return send

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
