"""What a scrape reads at that moment: the tasks in the shared store (so every process that
serves /metrics reports the same counts, whichever runner did the work), this runner's slots
and the cache on disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.store import states
from bot.store.interface import Store

log = logging.getLogger(__name__)


class TaskCollector(Collector):
    """``layerbot_tasks{status, platform}`` from one GROUP BY on the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # no query when the collector is registered

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("layerbot_tasks", "Tasks in the task database, by status and platform",
                                  labels=["status", "platform"])
        up = GaugeMetricFamily("layerbot_store_up", "1 if the task database answered this scrape")
        try:
            counts = self.store.count_by_status()
        except Exception as exc:  # the scrape still answers: the store's outage is a sample
            log.warning("metrics: the task database did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
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


class RunnerLoad(Protocol):
    @property
    def busy(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    max_parallel: int


class RunnerCollector(Collector):
    """This process's runner: slots busy (compose/upload) and tasks waiting for their guest."""

    def __init__(self, runner: RunnerLoad) -> None:
        self.runner = runner

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("layerbot_runner_slots_busy",
                                "Tasks compositing or uploading in this runner", value=self.runner.busy)
        yield GaugeMetricFamily("layerbot_runner_slots", "This runner's max_parallel",
                                value=self.runner.max_parallel)
        yield GaugeMetricFamily("layerbot_runner_tasks_waiting_for_guest",
                                "Tasks this runner watches until their guest shuts down",
                                value=self.runner.waiting)


@dataclass(frozen=True)
class CacheCollector(Collector):
    """Bytes the composite cache holds (measured at scrape time, so it includes what other
    runners sharing the folder wrote) and the free space of its filesystem."""

    cache_dir: Path
    usage: Callable[[Path], int]

    def describe(self) -> list[Metric]:
        return []  # no walk of the cache when the collector is registered

    def collect(self) -> Iterator[Metric]:
        try:
            held = self.usage(self.cache_dir)
            disk = os.statvfs(self.cache_dir)
        except FileNotFoundError:  # nothing composited yet
            return
        except OSError as exc:
            log.warning("metrics: cannot measure the cache at %s: %s", self.cache_dir, exc)
            return
        yield GaugeMetricFamily("layerbot_cache_bytes", "Bytes the composite cache holds on disk",
                                value=held)
        yield GaugeMetricFamily("layerbot_cache_filesystem_free_bytes",
                                "Bytes free (for unprivileged users) on the cache's filesystem",
                                value=disk.f_bavail * disk.f_frsize)
        yield GaugeMetricFamily("layerbot_cache_filesystem_size_bytes",
                                "Size of the cache's filesystem", value=disk.f_blocks * disk.f_frsize)
