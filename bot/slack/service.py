"""What ``layerbot serve`` runs: the Slack app, the job runner and the Slack notifier in one
event loop. HTTP mode (``POST /slack/events``, ``GET /healthz``, ``/readyz``, ``/metrics``) or, when
``SLACK_APP_TOKEN`` is set, Socket Mode (plus the health and metrics endpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError

from bot import metrics
from bot.catalog import Catalog
from bot.cli.log_setup import announce
from bot.metrics.health import Readiness
from bot.metrics.http import HealthRoutes
from bot.metrics.loop_lag import LoopLagMonitor
from bot.metrics.slack_calls import counted_client
from bot.runner.job_runner import JobRunner
from bot.runner.planner import Planner
from bot.slack.access import GroupDirectory
from bot.slack.app import build_app
from bot.slack.edge import MAX_BODY, RUNNER_OPTIONS, GatedSocketModeHandler, HttpEdge, SlackGate
from bot.slack.handlers import Background, Handlers
from bot.slack.notifier import SlackNotifier
from bot.slack.payloads import Workspace
from bot.slack.records import SlackDB
from bot.slack.response_urls import ResponseUrls, Turns
from bot.store.interface import Store
from compositor import set_tool_niceness

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
#: How much nicer than the event loop the worker threads (compositing, copying) and the
#: planner's process run.
WORKER_NICENESS = 10


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class SlackSettings:
    """The Slack credentials; ``repr`` never shows a secret."""

    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    app_token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if env is None else env
        app_token = env.get("SLACK_APP_TOKEN") or None
        required = ["SLACK_BOT_TOKEN"] + ([] if app_token else ["SLACK_SIGNING_SECRET"])
        missing = [var for var in required if not env.get(var)]
        if missing:
            raise SettingsError("environment variable(s) not set: " + ", ".join(missing))
        api_url = env.get("SLACK_API_URL") or DEFAULT_API_URL
        return cls(bot_token=env["SLACK_BOT_TOKEN"],
                   signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
                   app_token=app_token, api_url=api_url.rstrip("/") + "/")

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None


class SlackService:
    """Everything ``serve`` runs, wired together; tests run it in-process."""

    def __init__(self, settings: SlackSettings, catalog: Catalog, store: Store, *,
                 update_interval: float = 3.0, update_spacing: float = 1.2,
                 runner_poll: float = 0.5,
                 command: str = "/publish") -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.client = counted_client(token=settings.bot_token, base_url=settings.api_url)
        self.runner = JobRunner(store, catalog, poll_interval=runner_poll)
        self.planner = Planner(catalog, niceness=WORKER_NICENESS)
        turns = Turns()
        self.background = Background(turns)
        self.db = SlackDB(store)
        self.handlers = Handlers(db=self.db, catalog=catalog, client=self.client, turns=turns,
                                 groups=GroupDirectory(self.client), planner=self.planner,
                                 wake_runner=self.runner.wake)
        self.responses = ResponseUrls(turns)
        self.app = build_app(self.handlers, self.background, client=self.client,
                             signing_secret=settings.signing_secret, responses=self.responses,
                             command=command)
        self.gate = SlackGate(self.db, self.client)
        self.edge = HttpEdge(self.app, self.gate, settings.signing_secret)
        notifier_client = counted_client(token=settings.bot_token, base_url=settings.api_url)
        self.notifier = SlackNotifier(store, self.db, notifier_client,
                                      update_interval=update_interval,
                                      update_spacing=update_spacing)
        self.monitor = LoopLagMonitor()
        #: /metrics and /readyz (ready once the tools are found, at start)
        self.health = HealthRoutes(None)
        self._unwatch: Callable[[], None] = lambda: None
        #: seconds between looks for approval cards that expired unanswered
        self.approval_sweep = 30.0
        self.stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._site_runner: web.AppRunner | None = None
        self._socket: Any = None
        self.port: int | None = None

    # ------------------------------------------------------------ HTTP
    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        if not self.settings.socket_mode:  # Socket Mode has no signing secret to check
            app.router.add_post("/slack/events", self.edge.handle)
        app.router.add_get("/healthz", self._healthz)
        self.health.add_to(app, healthz=False)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            window = float(request.query.get("window", "0")) or None
        except ValueError:
            window = None
        return web.json_response({
            "ok": True,
            "mode": "socket" if self.settings.socket_mode else "http",
            "runner": {"busy": self.runner.busy, "max_parallel": self.runner.max_parallel,
                       "waiting": self.runner.waiting},
            "loop_lag_ms": round(self.monitor.worst(window) * 1000, 1),
            "loop_lag_p99_ms": round(self.monitor.p99(window) * 1000, 1),
            "loop_lag_own_ms": round(self.monitor.worst_own(window) * 1000, 1),
            "window_s": window,
            "refused": {str(status): n for status, n in sorted(self.edge.refused.items())},
        })

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str = "0.0.0.0", port: int = 3000) -> int:
        """Start the runner, the notifier and the server; returns the HTTP port.
        Raises SettingsError if Slack rejects the bot token."""
        await self._check_token()
        await self.planner.start()
        self.health.readiness = Readiness.of(self.store, self.catalog, self.runner.tags)
        self._unwatch = metrics.watch(self.store, self.runner, self.catalog.runner.cache_dir)
        purged = await self.db.run(self.db.intents.purge)
        if purged:
            log.info("removed %d old confirmation intents", purged)
        self._loops = [
            asyncio.create_task(self.runner.run(stop=self.stop), name="runner"),
            asyncio.create_task(self.notifier.run(self.stop), name="notifier"),
            asyncio.create_task(self.monitor.run(self.stop), name="loop-lag"),
            asyncio.create_task(self._expire_approvals(self.stop), name="approval-expiry"),
        ]
        self._site_runner = web.AppRunner(self.web_app(), access_log=None, **RUNNER_OPTIONS)
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        if self.settings.socket_mode:
            assert self.settings.app_token is not None
            self._socket = GatedSocketModeHandler(self.app, self.settings.app_token, self.gate)
            await self._socket.connect_async()
        return self.port

    async def _expire_approvals(self, stop: asyncio.Event) -> None:
        """Every ``approval_sweep`` seconds, edit the approval cards that expired unanswered."""
        while not stop.is_set():
            try:
                await self.handlers.expire_approvals()
            except Exception:
                log.exception("expiring approval cards failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.approval_sweep)

    async def _check_token(self) -> None:
        """auth.test once at start: a rejected token fails now, not at the first command,
        and bolt's authorization reuses the answer instead of calling auth.test inside the
        first requests' 3 seconds (once per request, when a burst comes first)."""
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            if exc.response.status_code == 429 or exc.response.status_code >= 500:
                log.warning("auth.test failed (%s); bolt will retry", exc.response.status_code)
                return
            raise SettingsError(
                f"Slack rejected SLACK_BOT_TOKEN: {exc.response.get('error')}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot reach Slack at %s (%s); bolt will retry",
                        self.settings.api_url, type(exc).__name__)
            return
        self.gate.workspace = Workspace.from_auth_test(auth.data)
        url = auth.get("url")
        self.handlers.workspace_url = url if isinstance(url, str) else None
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization):
                middleware.auth_test_result = auth

    async def close(self) -> None:
        """Graceful stop: no new requests, finish answering, let the runner detach its
        jobs (their tasks stay for the next runner) and flush the task messages."""
        if self._socket is not None:
            await self._socket.close_async()
        if self._site_runner is not None:
            await self._site_runner.cleanup()
        await self.background.drain(timeout=10)
        self.stop.set()
        _, pending = await asyncio.wait(self._loops, timeout=30) if self._loops else ((), ())
        for loop_task in pending:
            log.warning("%s did not stop in time; cancelling it", loop_task.get_name())
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.planner.close()
        await self.responses.close()
        self._unwatch()
        self.db.close()


def _nicer_thread() -> None:
    """Linux: nice() in a thread lowers only that thread, so the event loop that must
    answer Slack within 3 s gets the CPU first when composites keep every core busy."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def tune_process(loop: asyncio.AbstractEventLoop) -> None:
    """For a long-running ``serve``: worker threads (asyncio.to_thread: compositor, uploads)
    below the loop's priority, and the objects made at start-up out of the garbage
    collector's way (a full collection would walk them all, on the loop)."""
    set_tool_niceness(WORKER_NICENESS)
    loop.set_default_executor(ThreadPoolExecutor(
        max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="layerbot-work",
        initializer=_nicer_thread))
    gc.collect()
    gc.freeze()


async def serve_forever(service: SlackService, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    tune_process(loop)
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        bound = await service.start(host, port)
    except BaseException:  # a rejected token, a port in use...: the planner's process is started
        await service.close()
        raise
    mode = "Socket Mode" if service.settings.socket_mode else f"HTTP on {host}:{bound}"
    announce(f"layerbot serve: {mode} (POST /slack/events; GET /healthz, /readyz, /metrics on port "
             f"{bound}); runner {service.runner.owner}, max {service.runner.max_parallel} tasks "
             f"compositing/uploading at once", err=True)
    started = time.monotonic()
    try:
        await done.wait()
    finally:
        announce(f"layerbot serve: stopping after {time.monotonic() - started:.0f} s", err=True)
        with contextlib.suppress(Exception):
            await service.close()
