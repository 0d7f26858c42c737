"""adapters.retry.retrying with a fake clock: back-off, budget, Retry-After, causes kept."""

from __future__ import annotations

import pytest

from adapters.base import AuthError, PlatformTimeoutError, RetryableError
from adapters.retry import RetryPolicy, retrying


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def policy(clock: FakeClock, **overrides: float) -> RetryPolicy:
    settings = {"attempts": 5, "budget": 100.0, "first_delay": 1.0, "max_delay": 8.0, **overrides}
    return RetryPolicy(clock=clock, sleep=clock.sleep, random=lambda: 1.0,  # jitter's ceiling
                       **settings)  # type: ignore[arg-type]


def failing(errors: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if errors:
            raise errors.pop(0)
        return result

    call.calls = lambda: calls  # type: ignore[attr-defined]
    return call


async def test_retryable_errors_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    call = failing([RetryableError("HTTP 503") for _ in range(4)])
    assert await retrying(call, "uploading", policy(clock)) == "ok"
    assert clock.slept == [1.0, 2.0, 4.0, 8.0]


async def test_jitter_spreads_the_waits_below_the_ceiling() -> None:
    clock = FakeClock()
    jittered = RetryPolicy(clock=clock, sleep=clock.sleep, random=lambda: 0.25, first_delay=4.0)
    assert await retrying(failing([RetryableError("429")]), "x", jittered) == "ok"
    assert clock.slept == [1.0]


async def test_retry_after_is_honoured() -> None:
    clock = FakeClock()
    call = failing([RetryableError("HTTP 429", retry_after=20.0), PlatformTimeoutError("slow")])
    assert await retrying(call, "inserting the image", policy(clock)) == "ok"
    assert clock.slept == [20.0, 2.0]


async def test_a_permanent_error_is_raised_at_once_with_its_cause() -> None:
    clock = FakeClock()
    cause = ConnectionRefusedError("refused")
    error = AuthError("bad password")
    error.__cause__ = cause
    with pytest.raises(AuthError) as raised:
        await retrying(failing([error]), "logging in", policy(clock))
    assert raised.value.__cause__ is cause and clock.slept == []


async def test_attempts_and_time_budget_bound_the_retries() -> None:
    clock = FakeClock()
    call = failing([RetryableError(f"503 #{i}") for i in range(10)])
    with pytest.raises(RetryableError, match="503 #2"):
        await retrying(call, "uploading", policy(clock, attempts=3))
    assert call.calls() == 3  # type: ignore[attr-defined]

    clock = FakeClock()
    call = failing([RetryableError(f"503 #{i}") for i in range(10)])
    with pytest.raises(RetryableError, match="503 #3"):  # waits 1+2+4, the next 8 would pass 10 s
        await retrying(call, "uploading", policy(clock, budget=10.0, attempts=10))
    assert clock.now == 7.0
