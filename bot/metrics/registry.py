"""The process's metrics: one prometheus-client registry of its own (not the library's global
one, so tests and embedded runners do not mix their samples) and the instruments on it.

Imported only through :func:`bot.metrics.current`, the first time something is measured or
scraped: the CLI's short commands never load prometheus-client.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from bot.metrics.collectors import LiveCollector

#: compose and upload take seconds to an hour; a watch lasts until a person boots the VM
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
#: serve answers Slack within 3 s; lags past 20 ms are what the benches flag
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


#: a ``*_created`` gauge beside every counter and histogram doubles the series for a value
#: Prometheus itself does not use (it detects counter resets on its own)
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ProcessCollector(registry=reg)  # process_start_time_seconds, memory, CPU, open fds
        self.stage_seconds = Histogram(
            "layerbot_stage_duration_seconds", "How long a task's stage took in this process",
            ["stage", "platform", "outcome"], buckets=STAGE_BUCKETS, registry=reg)
        self.tasks_finished = Counter(
            "layerbot_tasks_finished", "Tasks this runner ended, by platform and final status",
            ["platform", "status"], registry=reg)
        self.uploaded_bytes = Counter(
            "layerbot_upload_bytes", "Bytes of disk images uploaded, per platform",
            ["platform"], registry=reg)
        self.cache_lookups = Counter(
            "layerbot_cache_lookups", "Composites answered from the cache (hit) or built (miss)",
            ["result"], registry=reg)
        self.cache_evictions = Counter(
            "layerbot_cache_evictions", "Cache entries removed to keep the cache under its limits",
            registry=reg)
        self.cache_evicted_bytes = Counter(
            "layerbot_cache_evicted_bytes", "Bytes freed by cache evictions", registry=reg)
        self.slack_calls = Counter(
            "layerbot_slack_api_calls", "Slack Web API responses (and errors), per method",
            ["method", "status"], registry=reg)
        self.slack_rate_limited = Counter(
            "layerbot_slack_api_rate_limited", "Slack Web API calls answered 429 Too Many Requests",
            ["method"], registry=reg)
        self.loop_lag = Histogram(
            "layerbot_event_loop_lag_seconds", "How late the event loop woke up from a short sleep",
            buckets=LAG_BUCKETS, registry=reg)
        #: the store, runner and cache read at each scrape (bot.metrics.watch)
        self.live = LiveCollector(_cache_bytes)
        reg.register(self.live)
        for result in ("hit", "miss"):  # both series exist from the start: rate() needs them
            self.cache_lookups.labels(result)


def _cache_bytes(cache_dir: Path) -> int:
    from compositor import cache_usage

    return cache_usage(cache_dir).total


_current: Metrics | None = None
#: scrapes and stages measure from worker threads: two first calls must not make two registries
_creating = threading.Lock()


def current() -> Metrics:
    global _current
    made = _current
    if made is not None:
        return made
    with _creating:
        if _current is None:
            _current = Metrics()
        return _current


def reset() -> Metrics:
    """A fresh registry (tests; an embedding process that starts over)."""
    global _current
    with _creating:
        _current = Metrics()
        return _current
