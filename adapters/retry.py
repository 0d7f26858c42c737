"""One way to retry a platform call: exponential back-off with full jitter, within a budget
of attempts and of total time, honouring the platform's Retry-After. Only ``retryable``
errors (:class:`adapters.base.AdapterError` with ``retryable = True``: HTTP 429/503,
timeouts) are retried; the last one is raised as it is, keeping its cause."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from adapters.base import AdapterError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    #: seconds from the first attempt after which no new attempt starts
    budget: float = 120.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    #: injected for tests: a fake clock and sleep, a seeded random
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = field(default=random.random)

    def delay(self, retry: int, error: AdapterError) -> float:
        """Seconds before retry number ``retry`` (1, 2, ...)."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** (retry - 1))
        wait = ceiling * self.random()  # "full jitter": many tasks do not retry in step
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


DEFAULT = RetryPolicy()
#: HTTP statuses that say "not now" (throttled, a gateway or the service briefly down): worth
#: another try after Retry-After. A 500 is the platform's own failure: reported, not retried.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
#: of those, the ones that say the request was not acted on (a 502 or 504 may come after the
#: platform acted): a request that creates something is sent again after these only
REFUSED_STATUSES = frozenset({429, 503})


async def retrying(call: Callable[[], Awaitable[T]], doing: str,
                   policy: RetryPolicy = DEFAULT,
                   only: tuple[type[AdapterError], ...] = (AdapterError,)) -> T:
    """``await call()``, again after a retryable AdapterError (of the ``only`` classes) while
    the budget allows."""
    started = policy.clock()
    attempt = 1
    while True:
        try:
            return await call()
        except AdapterError as exc:
            if not exc.retryable or not isinstance(exc, only) or attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt, exc)
            if policy.clock() + wait - started > policy.budget:
                raise
            log.warning("%s failed (%s); attempt %d of %d in %.1f s", doing, exc, attempt + 1,
                        policy.attempts, wait)
            await policy.sleep(wait)
            attempt += 1


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from an HTTP Retry-After header: delay-seconds or an HTTP date (None when absent
    or unreadable; never negative)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
