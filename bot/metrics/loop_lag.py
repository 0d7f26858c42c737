"""Event-loop lag: how late the loop wakes up from a short sleep. ``serve`` and ``worker``
run one monitor each; its samples feed ``layerbot_event_loop_lag_seconds`` and serve's
``/healthz`` (worst and p99 over a window, which the benches read)."""

from __future__ import annotations

import asyncio
from collections import deque

from bot import metrics


class LoopLagMonitor:
    """Sleeps ``interval`` and records the excess."""

    def __init__(self, interval: float = 0.02, keep: float = 600.0) -> None:
        self.interval = interval
        self.keep = keep
        self.samples: deque[tuple[float, float]] = deque()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            lag = max(0.0, now - before - self.interval)
            self.samples.append((now, lag))
            metrics.observe_loop_lag(lag)
            while self.samples and self.samples[0][0] < now - self.keep:
                self.samples.popleft()

    def recent(self, window: float | None = None) -> list[float]:
        """Lags (seconds) sampled over the last ``window`` seconds (default: all kept)."""
        since = asyncio.get_running_loop().time() - window if window else float("-inf")
        return [lag for at, lag in self.samples if at >= since]

    def worst(self, window: float | None = None) -> float:
        return max(self.recent(window), default=0.0)

    def p99(self, window: float | None = None) -> float:
        lags = sorted(self.recent(window))
        return lags[int(len(lags) * 0.99)] if lags else 0.0
