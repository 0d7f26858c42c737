"""Progress reporting: a note and an overall fraction, never going backwards."""

from __future__ import annotations

import threading

from .spec import ProgressCallback


class Reporter:
    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._last = 0.0

    def stage(self, note: str, fraction: float) -> None:
        if self._callback is None:
            return
        with self._lock:
            self._last = max(self._last, min(1.0, fraction))
            value = self._last
        self._callback(note, value)

    def span(self, note: str, start: float, end: float) -> Span:
        return Span(self, note, start, end)


class Span:
    """A stage whose own 0..1 progress maps onto [start, end] of the whole build."""

    def __init__(self, reporter: Reporter, note: str, start: float, end: float) -> None:
        self.reporter, self.note, self.start, self.end = reporter, note, start, end

    def __call__(self, fraction: float) -> None:
        self.reporter.stage(self.note, self.start + (self.end - self.start) * fraction)
