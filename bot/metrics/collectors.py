"""What a scrape reads at that moment: the tasks in the shared store (so every process that
serves /metrics reports the same counts, whichever runner did the work), the runner's slots
and the cache on disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.metrics.single_flight import SingleFlight
from bot.store import states
from bot.store.interface import Store

log = logging.getLogger(__name__)

#: a scrape reports ``layerbot_store_up 0`` rather than wait longer for the task counts (a
#: runner's commit waiting for fsync holds the store's lock; Prometheus times out at 10 s)
STORE_READ_TIMEOUT = 2.0


class RunnerLoad(Protocol):
    @property
    def busy(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    max_parallel: int
    #: the runner tags it claims tasks of (readiness checks the tools of those templates only)
    tags: frozenset[str]


@dataclass(frozen=True, eq=False)
class Watched:
    store: Store
    runner: RunnerLoad
    cache_dir: Path
    #: the task counts, read on a thread of their own with a time limit
    counts: SingleFlight[list[tuple[str, str, int]]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", SingleFlight(self.store.count_by_status, "layerbot-store-read"))


class LiveCollector(Collector):
    """Registered once per registry; reads what :func:`bot.metrics.watch` added. A process runs
    one runner (serve, worker); with several (tests, an embedding program) their slots add up,
    and the tasks and cache reported are those of the one watched last."""

    def __init__(self, cache_usage: Callable[[Path], int]) -> None:
        self.cache_usage = cache_usage
        self.watched: list[Watched] = []

    def describe(self) -> list[Metric]:
        return []  # no store query or cache walk when the registry is made

    def collect(self) -> Iterator[Metric]:
        watched = list(self.watched)  # scrapes run in a thread; watch() runs on the loop
        if not watched:
            return
        yield from task_metrics(watched[-1].counts)
        yield from runner_metrics([w.runner for w in watched])
        yield from cache_metrics(watched[-1].cache_dir, self.cache_usage)


def task_metrics(counted: SingleFlight[list[tuple[str, str, int]]]) -> Iterator[Metric]:
    """``layerbot_tasks{status, platform}`` from one GROUP BY, and whether the store answered
    within STORE_READ_TIMEOUT."""
    up = GaugeMetricFamily("layerbot_store_up", "1 if the task database answered this scrape")
    try:
        counts = counted.result(STORE_READ_TIMEOUT)
    except TimeoutError:
        log.warning("metrics: the task database did not answer within %g s", STORE_READ_TIMEOUT)
        up.add_metric([], 0)
        yield up
        return
    except Exception as exc:  # the scrape still answers: the store's outage is a sample
        log.warning("metrics: the task database did not answer: %s", type(exc).__name__)
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    tasks = GaugeMetricFamily("layerbot_tasks", "Tasks in the task database, by status and platform",
                              labels=["status", "platform"])
    seen = {(status, platform): n for status, platform, n in counts}
    # every status of every platform seen, zeros included: an alert on a rise needs the series
    for platform in sorted({platform for _, platform in seen}):
        for status in states.ALL:
            tasks.add_metric([status, platform], seen.get((status, platform), 0))
    for (status, platform), n in sorted(seen.items()):
        if status not in states.ALL:  # written by a newer layerbot: shown as it is
            tasks.add_metric([status, platform], n)
    yield tasks
    yield up


def runner_metrics(runners: list[RunnerLoad]) -> Iterator[Metric]:
    """Slots busy (compose/upload) and max, and the tasks waiting for their guest."""
    yield GaugeMetricFamily("layerbot_runner_slots_busy", "Tasks compositing or uploading in this runner",
                            value=sum(r.busy for r in runners))
    yield GaugeMetricFamily("layerbot_runner_slots", "This runner's max_parallel",
                            value=sum(r.max_parallel for r in runners))
    yield GaugeMetricFamily("layerbot_runner_tasks_waiting_for_guest",
                            "Tasks this runner watches until their guest shuts down",
                            value=sum(r.waiting for r in runners))


def cache_metrics(cache_dir: Path, usage: Callable[[Path], int]) -> Iterator[Metric]:
    """Bytes the composite cache holds (measured now, so it includes what other runners sharing
    the folder wrote) and the free space of its filesystem."""
    try:
        held = usage(cache_dir)
        disk = os.statvfs(cache_dir)
    except FileNotFoundError:  # nothing composited yet
        return
    except OSError as exc:
        log.warning("metrics: cannot measure the cache at %s: %s", cache_dir, exc)
        return
    yield GaugeMetricFamily("layerbot_cache_bytes", "Bytes the composite cache holds on disk", value=held)
    yield GaugeMetricFamily("layerbot_cache_filesystem_free_bytes",
                            "Bytes free (for unprivileged users) on the cache's filesystem",
                            value=disk.f_bavail * disk.f_frsize)
    yield GaugeMetricFamily("layerbot_cache_filesystem_size_bytes", "Size of the cache's filesystem",
                            value=disk.f_blocks * disk.f_frsize)
