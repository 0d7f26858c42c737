"""A local stand-in for the Slack Web API and for response_url, on 127.0.0.1 and a
random port. It records every call (method + parameters) and answers like Slack:
auth.test, chat.postMessage (increasing ts), chat.postEphemeral, chat.getPermalink (of a
message it posted), chat.update (or 429 with Retry-After on demand), views.open, views.publish,
views.update and views.push (checked as Slack checks a modal: :meth:`SlackDouble.modal_problem`),
usergroups.users.list, users.info (of ``users``); and
apps.connections.open with a Socket Mode WebSocket that sends envelopes and records
their acknowledgements."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = "UBOT"
TEAM = "T0001"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200


class SlackDouble:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.groups: dict[str, list[str]] = {}
        #: chat.update answers 429 (Retry-After: ``retry_after``) this many times.
        self.rate_limit_updates = 0
        self.retry_after = 1
        #: channels where chat.postMessage answers channel_not_found.
        self.missing_channels: set[str] = set()
        self._ts = itertools.count(1)
        self._responses = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.changed = asyncio.Event()
        #: Called when a wait times out, to explain the app's state in the failure.
        self.diagnose: Callable[[], str] | None = None
        self.sockets: list[web.WebSocketResponse] = []
        #: tokens answered with invalid_auth
        self.reject_tokens: set[str] = set()
        #: users.info answers: id -> the ``user`` object (name, real_name, profile)
        self.users: dict[str, dict[str, Any]] = {}
        #: (channel, ts) of every message chat.postMessage posted
        self.posted: set[tuple[str, str]] = set()
        #: the client address (host, port) of each response_url post: one per connection
        self.response_peers: list[tuple[str, int] | None] = []

    # ------------------------------------------------------------ server
    async def start(self) -> SlackDouble:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def new_response_url(self) -> str:
        return f"{self.url}/response/{next(self._responses)}"

    # ------------------------------------------------------------ recording
    def record(self, method: str, params: dict[str, Any], status: int = 200) -> None:
        self.calls.append(Call(method, params, status=status))
        self.changed.set()

    def of(self, method: str, **match: Any) -> list[Call]:
        return [c for c in self.calls if c.method == method
                and all(c.params.get(k) == v for k, v in match.items())]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every call and every 50 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; calls: {[c.method for c in self.calls]}"
                                     + (f"\n{self.diagnose()}" if self.diagnose else ""))
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)

    # ------------------------------------------------------------ handlers
    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(dict(await request.post()))
        for key in ("blocks", "view"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        auth = request.headers.get("Authorization", "")
        params["_token"] = auth.removeprefix("Bearer ")
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        if method == "chat.update" and self.rate_limit_updates > 0:
            self.rate_limit_updates -= 1
            self.record(method, params, status=429)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(self.retry_after)})
        if params["_token"] in self.reject_tokens:
            self.record(method, params)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = self._answer(method, params)
        self.record(method, params)
        return web.json_response(body)

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://example.slack.com/", "team": "Example",
                    "user": "layerbot", "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0001"}
        if method == "chat.postMessage":
            channel = str(params.get("channel"))
            if channel in self.missing_channels:
                return {"ok": False, "error": "channel_not_found"}
            if channel.startswith(("U", "W")):
                channel = "D" + channel[1:]
            ts = f"1700000000.{next(self._ts):06d}"
            self.posted.add((channel, ts))
            return {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts}}
        if method == "chat.getPermalink":
            return self._permalink(params)
        if method == "users.info":
            user = self.users.get(str(params.get("user")))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000000.{next(self._ts):06d}"}
        if method == "chat.update":
            return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}
        if method in ("views.open", "views.publish"):
            return {"ok": True, "view": {"id": "V0001", **(params.get("view") or {})}}
        if method in ("views.update", "views.push"):
            problem = self.modal_problem(method, params)
            if problem:
                return {"ok": False, "error": "invalid_arguments", "response_metadata": {
                    "messages": [problem]}}
            return {"ok": True, "view": {"id": params.get("view_id") or "V0002", **params["view"]}}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.groups.get(str(params.get("usergroup")), [])}
        return {"ok": False, "error": "unknown_method"}

    @staticmethod
    def modal_problem(method: str, params: dict[str, Any]) -> str | None:
        """What Slack would refuse in a views.update/views.push call (its documented limits)."""
        if method == "views.update" and not (params.get("view_id") or params.get("external_id")):
            return "view_id or external_id is required"
        if method == "views.push" and not params.get("trigger_id"):
            return "trigger_id is required"
        view = params.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return "view must be a modal"
        for key, limit in (("title", 24), ("submit", 24), ("close", 24)):
            text = view.get(key)
            if key == "title" and text is None:
                return "view.title is required"
            if text is not None and (text.get("type") != "plain_text" or len(text["text"]) > limit):
                return f"view.{key} must be plain_text of at most {limit} characters"
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or not 0 < len(blocks) <= 100:
            return "view.blocks must hold 1 to 100 blocks"
        if any(b.get("type") == "input" for b in blocks) and not view.get("submit"):
            return "a view with inputs needs submit"
        if len(view.get("private_metadata") or "") > 3000 or len(view.get("callback_id") or "") > 255:
            return "private_metadata (3000) or callback_id (255) too long"
        return None

    def _permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        """As Slack: both arguments required, and only a message that exists has a link."""
        channel, ts = params.get("channel"), params.get("message_ts")
        if not channel or not ts:
            return {"ok": False, "error": "invalid_arguments"}
        if (channel, ts) not in self.posted:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel,
                "permalink": f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"}

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Send a Socket Mode envelope to the connected app; returns its envelope id."""
        envelope_id = f"env-{next(self._ts)}"
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind,
                                          "payload": payload,
                                          "accepts_response_payload": kind != "events_api"})
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0001"}})
        self.record("socket_connect", {})
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    self.record("socket_ack", json.loads(msg.data))
        finally:
            self.sockets.remove(ws)
        return ws

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        transport = request.transport
        self.response_peers.append(transport.get_extra_info("peername") if transport else None)
        self.record("response_url", {"id": request.match_info["id"], **body})
        return web.Response(text="ok")
