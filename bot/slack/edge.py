"""The Slack edge of ``layerbot serve``: every request is checked from the cheapest test
to the dearest, and refused with a 4xx at the first that fails, before bolt sees it.

HTTP (``POST /slack/events``), before the body is read:
  1. ``Content-Encoding`` absent or ``identity`` (Slack never compresses; the server does
     not decompress either, see :data:`RUNNER_OPTIONS`) — else 415;
  2. the body at most :data:`MAX_BODY` bytes (``Content-Length``, then while reading) — 413;
  3. ``X-Slack-Request-Timestamp`` a plain integer within :data:`MAX_SKEW` s of now and
     ``X-Slack-Signature`` the HMAC-SHA256 of the raw bytes — else 401;
then the body is decoded (UTF-8 only, else 400) and parsed the way bolt parses it (400 if
it is not a JSON object). Both modes (Socket Mode too), in :class:`SlackGate`:
  4. the payload's shape (:mod:`bot.slack.payloads`) — 400;
  5. the workspace (and enterprise) it comes from is the installed one — 403 (except what
     bolt answers itself before any listener: ``ssl_check=1``, ``url_verification``).
Every refusal after the signature check (decoding, parsing, 4 and 5) comes from a request
Slack signed and is audited; 1-3 are only counted (``/healthz``): auditing them would let
anyone without the secret fill the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import build_normalized_headers, extract_content_type, parse_body
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.payloads import Malformed, Workspace, actor, check_shape
from bot.slack.records import SlackDB

log = logging.getLogger(__name__)

#: Slack's largest payloads are interactions that carry the message or view they came
#: from (a view: at most 100 blocks; a message: 50 blocks of at most 3,000 characters,
#: URL-encoded JSON); ours are a few KiB. Reading and hashing this much takes about 1 ms.
MAX_BODY = 512 * 1024
#: Slack's own replay window for a request's timestamp.
MAX_SKEW = 300
#: aiohttp would otherwise inflate a gzip/deflate body on the event loop while reading it
#: (and while draining what a refused request left unread).
RUNNER_OPTIONS = {"auto_decompress": False}
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.reason + "\n")


class SlackGate:
    """Admits a parsed payload (shape, workspace) in both modes; audits each refusal."""

    def __init__(self, db: SlackDB, client: AsyncWebClient) -> None:
        self.db = db
        self.client = client
        self.workspace: Workspace | None = None
        self._learning = asyncio.Lock()

    async def installed(self) -> Workspace | None:
        """The installed workspace; learnt from auth.test at start, or now if that failed."""
        if self.workspace is not None:  # every request after start-up: no lock, no call
            return self.workspace
        async with self._learning:
            if self.workspace is None:
                try:
                    async with asyncio.timeout(2.0):
                        self.workspace = Workspace.from_auth_test((await self.client.auth_test()).data)
                except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("auth.test failed (%s): cannot tell which workspace is ours yet",
                                type(exc).__name__)
        return self.workspace

    async def admit(self, body: object) -> Refusal | None:
        try:
            envelope = check_shape(body)
        except Malformed as exc:
            return await self.refuse(body, 400, f"malformed payload: {exc}")
        if answered_by_bolt(body):
            return None  # they carry no workspace, and no listener sees them
        workspace = await self.installed()
        if workspace is None:
            return Refusal(503, "the installed workspace is not known yet")
        foreign = workspace.foreign(envelope)
        if foreign is not None:
            return await self.refuse(body, 403, f"request from another workspace: {foreign}")
        return None

    async def refuse(self, body: object, status: int, reason: str) -> Refusal:
        log.warning("slack: refused a signed request (%d): %s", status, reason)
        await self.db.run(self.db.store.audit, actor(body), "request", "slack", False, reason)
        return Refusal(status, reason)


def answered_by_bolt(body: object) -> bool:
    """Requests bolt's own middleware answers before any listener runs: ``ssl_check=1``
    (``SslCheck``: exactly the string "1") and ``type: url_verification``."""
    return isinstance(body, dict) and (body.get("ssl_check") == "1" or body.get("type") == "url_verification")


class HttpEdge:
    """``POST /slack/events``: steps 1-3 here, then the gate, then bolt."""

    def __init__(self, app: AsyncApp, gate: SlackGate, signing_secret: str) -> None:
        self.app = app
        self.gate = gate
        self._secret = signing_secret.encode()
        self.refused: Counter[int] = Counter()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = await self._check(request)
        if isinstance(refusal, Refusal):
            self.refused[refusal.status] += 1
            return refusal.response()
        return await to_aiohttp_response(await self.app.async_dispatch(refusal))

    async def _check(self, request: web.Request) -> Refusal | AsyncBoltRequest:
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return Refusal(415, "Content-Encoding must be identity")
        if (request.content_length or 0) > MAX_BODY:
            return Refusal(413, f"the body is larger than {MAX_BODY} bytes")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (_TIMESTAMP.fullmatch(timestamp) and _SIGNATURE.fullmatch(signature)):
            return Refusal(401, "missing or malformed Slack signature")
        if abs(time.time() - int(timestamp)) > MAX_SKEW:
            return Refusal(401, "stale Slack request timestamp")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return Refusal(413, f"the body is larger than {MAX_BODY} bytes")
        expected = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + raw,
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest("v0=" + expected, signature):
            return Refusal(401, "invalid Slack signature")
        if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            return await self.gate.refuse(None, 400, "the body must be UTF-8 (the charset is not)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await self.gate.refuse(None, 400, f"the body is not valid UTF-8 (byte {exc.start})")
        headers = build_normalized_headers({k: request.headers.getall(k) for k in request.headers})
        try:  # as bolt will parse it
            body = parse_body(text, extract_content_type(headers))
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            return await self.gate.refuse(None, 400, f"malformed payload: not JSON ({why})")
        refusal = await self.gate.admit(body)
        if refusal is not None:
            return refusal
        return AsyncBoltRequest(body=text, query=request.query_string, headers=headers)


class GatedSocketModeHandler(AsyncSocketModeHandler):
    """Socket Mode (the WebSocket is authenticated by the app token): steps 4-5, then bolt.
    A refused envelope is acknowledged without a payload, so Slack does not resend it."""

    def __init__(self, app: AsyncApp, app_token: str, gate: SlackGate) -> None:
        super().__init__(app, app_token)
        self.gate = gate

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        if await self.gate.admit(req.payload) is not None:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        await super().handle(client, req)
