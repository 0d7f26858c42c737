"""Run by test_gcp_compute.py in a fresh interpreter (``python -m tests.gcp.image_step_probe``),
where google.cloud.compute_v1 is not imported yet: the image step against the Compute double
while a ticker measures how late the event loop runs it, and an import hook notes on which
thread compute_v1 is first imported. Prints one JSON line."""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

WATCHED = "google.cloud.compute_v1"


class ImportWitness(importlib.abc.MetaPathFinder):
    """Finds nothing; remembers whether the event loop's thread asked for WATCHED."""

    def __init__(self) -> None:
        self.on_loop_thread: list[bool] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname == WATCHED:
            self.on_loop_thread.append(threading.current_thread() is threading.main_thread())
        return None


async def ticker(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        lags.append(time.perf_counter() - before - period)


async def main() -> dict[str, object]:
    from adapters.base import PlatformStep
    from adapters.gcp import Adapter
    from adapters.steps import StepRunner

    from .compute_double import ComputeDouble
    from .compute_fixtures import PROJECT, TOKEN, clients, connector, context

    witness = ImportWitness()
    already = WATCHED in sys.modules
    sys.meta_path.insert(0, witness)
    double = await ComputeDouble(PROJECT, token=TOKEN).start()
    adapter = Adapter(connector(double), clients())
    lags: list[float] = []
    stop = asyncio.Event()
    ticking = asyncio.create_task(ticker(lags, stop))
    await asyncio.sleep(0.05)
    try:
        ctx = context("win10-stall", Path(tempfile.gettempdir()) / "unused.tar.gz")
        await StepRunner([PlatformStep("image", adapter, adapter._create_image)]).run(ctx)
    finally:
        stop.set()
        await ticking
        await adapter.close()
        await double.close()
    return {"already_imported": already, "on_loop_thread": witness.on_loop_thread,
            "max_lag": max(lags), "status": double.images["win10-stall"]["status"]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
