"""Event-loop lag: how late the loop wakes up from a short sleep. ``serve`` and ``worker``
run one monitor each; its samples feed ``layerbot_event_loop_lag_seconds`` and serve's
``/healthz`` (worst and p99 over a window, which the benches read)."""

from __future__ import annotations

import asyncio
from collections import deque

from bot import metrics


class LoopLagMonitor:
    """Sleeps ``interval`` and records the excess, and how much of it the loop's thread spent
    runnable but without a CPU (the kernel's run delay, /proc/thread-self/schedstat): that
    part is the machine's load, not the app's doing."""

    def __init__(self, interval: float = 0.02, keep: float = 600.0) -> None:
        self.interval = interval
        self.keep = keep
        #: (loop time, lag, run delay during the sleep), seconds
        self.samples: deque[tuple[float, float, float]] = deque()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before, delayed = loop.time(), run_delay()
            await asyncio.sleep(self.interval)
            now = loop.time()
            lag = max(0.0, now - before - self.interval)
            self.samples.append((now, lag, min(lag, max(0.0, run_delay() - delayed))))
            metrics.observe_loop_lag(lag)
            while self.samples and self.samples[0][0] < now - self.keep:
                self.samples.popleft()

    def recent(self, window: float | None = None) -> list[float]:
        """Lags (seconds) sampled over the last ``window`` seconds (default: all kept)."""
        return [lag for _, lag, _ in self._window(window)]

    def worst(self, window: float | None = None) -> float:
        return max(self.recent(window), default=0.0)

    def worst_own(self, window: float | None = None) -> float:
        """The worst lag less the time the loop's thread waited for a CPU meanwhile."""
        return max((lag - waited for _, lag, waited in self._window(window)), default=0.0)

    def p99(self, window: float | None = None) -> float:
        lags = sorted(self.recent(window))
        return lags[int(len(lags) * 0.99)] if lags else 0.0

    def _window(self, window: float | None) -> list[tuple[float, float, float]]:
        since = asyncio.get_running_loop().time() - window if window else float("-inf")
        return [sample for sample in self.samples if sample[0] >= since]


def run_delay() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (0 where the
    kernel does not say)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
