"""Metrics of a layerbot process, served as ``/metrics`` (Prometheus text format) by ``serve``
and ``worker --metrics-port``; docs/operations.md lists them.

The code measures through the helpers here; prometheus-client is imported the first time one
is called (bot.metrics.registry), so commands that measure nothing never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.metrics.collectors import RunnerLoad
    from bot.metrics.registry import Metrics
    from bot.store.interface import Store


def current() -> Metrics:
    from bot.metrics.registry import current

    return current()


def reset() -> Metrics:
    """Start over with a fresh registry (tests: counters of one test only)."""
    from bot.metrics.registry import reset

    return reset()


@contextlib.contextmanager
def timed_stage(stage: str, platform: str) -> Iterator[None]:
    """Observe how long the block (one stage of a task) took, with how it ended."""
    started = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "stopped"  # cancelled by a user, or detached by a runner that stops
        raise
    finally:
        current().stage_seconds.labels(stage, platform, outcome).observe(time.monotonic() - started)


def add_uploaded_bytes(platform: str, count: float) -> None:
    if count > 0:
        current().uploaded_bytes.labels(platform).inc(count)


class UploadMeter:
    """Counts an upload's bytes as its adapter reports progress: adapters report the fraction of
    the artifact sent, so the bytes are that fraction of its size (a fraction never counts twice)."""

    def __init__(self, platform: str, size: int) -> None:
        self.platform = platform
        self.size = size
        self.counted = 0

    def reached(self, fraction: float) -> None:
        done = int(min(max(fraction, 0.0), 1.0) * self.size)
        if done > self.counted:
            add_uploaded_bytes(self.platform, done - self.counted)
            self.counted = done


def count_task_finished(platform: str, status: str) -> None:
    """A task this runner worked ended (done, failed or cancelled)."""
    current().tasks_finished.labels(platform, status).inc()


def count_cache_lookup(hit: bool) -> None:
    current().cache_lookups.labels("hit" if hit else "miss").inc()


def count_cache_evictions(entries: int, freed: int) -> None:
    metrics = current()
    metrics.cache_evictions.inc(entries)
    metrics.cache_evicted_bytes.inc(freed)


def count_slack_call(method: str, status: str) -> None:
    """One Web API response (``status``: the HTTP status, or ``error`` when none came)."""
    metrics = current()
    metrics.slack_calls.labels(method, status).inc()
    if status == "429":
        metrics.slack_rate_limited.labels(method).inc()


def observe_loop_lag(seconds: float) -> None:
    current().loop_lag.observe(seconds)


def watch(store: Store, runner: RunnerLoad, cache_dir: Path) -> Callable[[], None]:
    """Report at each scrape the tasks by status and platform (read from ``store``), this
    runner's slots and guest waits, and the bytes the composite cache holds. Returns the call
    that stops it."""
    from bot.metrics.collectors import Watched

    live = current().live
    watched = Watched(store, runner, Path(cache_dir))
    live.watched.append(watched)

    def unwatch() -> None:
        with contextlib.suppress(ValueError):  # the registry was reset meanwhile
            live.watched.remove(watched)

    return unwatch


def exposition() -> tuple[bytes, str]:
    """The registry in the text format and its content type (blocking: reads the store)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(current().registry), CONTENT_TYPE_LATEST
