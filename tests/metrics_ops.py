"""The worker's ops endpoints (/metrics, /healthz, /readyz) in the test's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bot.catalog import Catalog
from bot.metrics.http import ops_endpoints
from bot.runner.job_runner import JobRunner
from bot.store.interface import Store


@contextlib.asynccontextmanager
async def ops_server(store: Store, catalog: Catalog) -> AsyncIterator[int]:
    """What ``layerbot worker --metrics-port 0`` serves (its runner idle); yields the port."""
    async with ops_endpoints(store, catalog, JobRunner(store, catalog), "127.0.0.1", 0) as port:
        yield port


async def get_json(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.json()
