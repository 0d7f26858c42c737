"""The operations endpoints, on serve's aiohttp app and on ``worker --metrics-port``:
``/metrics`` (Prometheus text format), ``/healthz`` (the process answers), ``/readyz``
(200, or 503 with a JSON body naming what is not ready)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from bot import metrics
from bot.catalog import Catalog
from bot.metrics.collectors import RunnerLoad
from bot.metrics.health import Readiness
from bot.metrics.loop_lag import LoopLagMonitor
from bot.metrics.single_flight import SingleFlight
from bot.store.interface import Store


def ops_url(host: str, port: int, path: str = "/metrics") -> str:
    """The URL of ``path`` on ``host:port``; an IPv6 address goes in brackets (RFC 3986)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}{path}"


class HealthRoutes:
    def __init__(self, readiness: Readiness | None) -> None:
        #: None until the process has found its tools (readyz says "starting" meanwhile)
        self.readiness = readiness
        #: concurrent scrapes share the one in flight, on a thread of its own
        self._scrape = SingleFlight(metrics.exposition, "layerbot-scrape")

    def add_to(self, app: web.Application, *, healthz: bool = True) -> None:
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/readyz", self.readyz)
        if healthz:
            app.router.add_get("/healthz", self.healthz)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = await self._scrape.wait()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.readiness is None:
            return web.json_response({"ready": False, "checks": {"process": "starting"}}, status=503)
        ready, checks = await self.readiness.check()
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


class OpsServer:
    """A small HTTP server for these routes in the running event loop (``layerbot worker``)."""

    def __init__(self, routes: HealthRoutes) -> None:
        self.routes = routes
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        self.routes.add_to(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def ops_endpoints(store: Store, catalog: Catalog, runner: RunnerLoad, host: str,
                        port: int) -> AsyncIterator[int]:
    """``/metrics``, ``/healthz`` and ``/readyz`` of a process without Slack (``layerbot worker``),
    with its event-loop lag measured, while the block runs; yields the port listened on.
    Raises OSError when it cannot listen there."""
    routes = HealthRoutes(Readiness.of(store, catalog, runner.tags))
    server = OpsServer(routes)
    await server.start(host, port)
    assert server.port is not None
    unwatch = metrics.watch(store, runner, catalog.runner.cache_dir)
    stop = asyncio.Event()
    lag = asyncio.create_task(LoopLagMonitor().run(stop), name="loop-lag")
    try:
        yield server.port
    finally:
        stop.set()
        await lag
        await server.close()
        unwatch()
