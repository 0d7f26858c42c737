"""adapters.blocking with a fake blocking SDK: thread offload, one re-login on expiry,
sessions shared by key and reference-counted."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pytest

from adapters.base import AuthError, PlatformError
from adapters.blocking import Session, SessionClosedError, SessionKey, SessionPool

SECRET = "s3cret-password"


class Expired(Exception):
    pass


@dataclass
class FakeSdk:
    """A platform: tokens it knows, every login and logout it saw."""

    password: str = SECRET
    live: set[int] = field(default_factory=set)
    logins: int = 0
    logouts: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def login(self, password: str) -> int:
        with self.lock:
            if password != self.password:
                raise PermissionError("bad password")
            self.logins += 1
            self.live.add(self.logins)
            return self.logins

    def whoami(self, token: int) -> int:
        if token not in self.live:
            raise Expired(f"session {token} is not authenticated")
        return token

    def expire_all(self) -> None:
        self.live.clear()


class Client:
    def __init__(self, sdk: FakeSdk, token: int) -> None:
        self.sdk = sdk
        self.token = token


class FakeSession(Session[Client]):
    def __init__(self, sdk: FakeSdk, password: str = SECRET) -> None:
        super().__init__("fake.example:443")
        self.sdk = sdk
        self.password = password

    def login(self) -> Client:
        try:
            return Client(self.sdk, self.sdk.login(self.password))
        except PermissionError as exc:
            raise AuthError(f"{self.endpoint}: login refused") from exc

    def login_again(self, client: Client) -> Client:
        client.token = self.sdk.login(self.password)
        return client

    def expired(self, exc: BaseException) -> bool:
        return isinstance(exc, Expired)

    def logout(self, client: Client) -> None:
        self.sdk.logouts.append(client.token)
        self.sdk.live.discard(client.token)


async def test_calls_run_on_a_worker_thread_and_log_in_lazily() -> None:
    sdk = FakeSdk()
    session = FakeSession(sdk)
    assert sdk.logins == 0 and not session.logged_in
    seen: list[threading.Thread] = []

    def call(client: Client) -> int:
        seen.append(threading.current_thread())
        return client.sdk.whoami(client.token)

    assert await session.call(call, "asking who I am") == 1
    assert seen[0] is not threading.main_thread() and sdk.logins == 1
    await session.close()
    assert sdk.logouts == [1]


async def test_an_expired_session_logs_in_again_once_then_the_call_is_retried() -> None:
    sdk = FakeSdk()
    session = FakeSession(sdk)
    await session.call(lambda c: c.sdk.whoami(c.token), "first call")
    sdk.expire_all()
    assert await session.call(lambda c: c.sdk.whoami(c.token), "after expiry") == 2
    assert session.logins == 2 and sdk.logins == 2

    def always_expired(client: Client) -> int:
        raise Expired("still not authenticated")

    with pytest.raises(PlatformError, match="always expired failed: still not authenticated") as info:
        await session.call(always_expired, "always expired")
    assert isinstance(info.value.__cause__, Expired)
    assert sdk.logins == 3  # one re-login for that call, not a loop
    await session.close()


async def test_threads_that_see_the_same_expiry_log_in_again_once() -> None:
    sdk = FakeSdk()
    session = FakeSession(sdk)
    await session.call(lambda c: c.sdk.whoami(c.token), "first call")
    sdk.expire_all()
    barrier = threading.Barrier(4)

    def together(client: Client) -> int:
        token = client.token
        if token not in sdk.live:
            barrier.wait(5)  # all four fail on the same expired session
        return client.sdk.whoami(client.token)

    results = await asyncio.gather(*(session.call(together, "together") for _ in range(4)))
    assert results == [2, 2, 2, 2] and sdk.logins == 2
    await session.close()


async def test_a_failed_login_is_the_platforms_error() -> None:
    session = FakeSession(FakeSdk(), password="wrong")
    with pytest.raises(AuthError, match="login refused"):
        await session.call(lambda c: c.token, "anything")


async def test_adapters_with_one_key_share_one_session_until_the_last_releases_it() -> None:
    sdk = FakeSdk()
    pool: SessionPool[FakeSession] = SessionPool()
    key = SessionKey.of("FAKE.example:443", "admin", SECRET)
    assert SECRET not in repr(key) and key.endpoint == "fake.example:443"
    first = pool.acquire(key, lambda: FakeSession(sdk))
    second = pool.acquire(key, lambda: FakeSession(sdk))
    assert first is second and pool.users(key) == 2
    await first.call(lambda c: c.token, "one")
    await second.call(lambda c: c.token, "two")
    assert sdk.logins == 1
    other = pool.acquire(SessionKey.of("fake.example:443", "admin", "changed"),
                         lambda: FakeSession(sdk))
    assert other is not first  # another password: another session

    await pool.release(key, first)
    assert pool.users(key) == 1 and sdk.logouts == [] and first.logged_in
    await pool.release(key, second)
    assert pool.users(key) == 0 and sdk.logouts == [1] and not first.logged_in
    third = pool.acquire(key, lambda: FakeSession(sdk))
    assert third is not first  # a new session after the last release
    await pool.release(key, third)
    await pool.release(SessionKey.of("fake.example:443", "admin", "changed"), other)
    assert pool.shared() == []


async def test_a_closed_session_refuses_late_calls_instead_of_logging_in_again() -> None:
    sdk = FakeSdk()
    pool: SessionPool[FakeSession] = SessionPool()
    key = SessionKey.of("fake.example:443", "admin", SECRET)
    session = pool.acquire(key, lambda: FakeSession(sdk))
    await session.call(lambda c: c.token, "one")
    await pool.release(key, session)
    assert sdk.logouts == [1]
    with pytest.raises(SessionClosedError, match=r"fake\.example:443: the session was closed"):
        await session.call(lambda c: c.token, "a late call")
    assert sdk.logins == 1 and not session.logged_in and sdk.live == set() and session.closed


async def test_close_logs_out_only_after_the_calls_under_way_have_returned() -> None:
    """An SDK's logout drops its connections: one still in use by a call on another thread
    would be left open (a leaked socket). close() waits for the calls under way."""
    sdk = FakeSdk()
    session = FakeSession(sdk)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow(client: Client) -> int:
        started.set()
        release.wait(5)
        order.append("call returned")
        return client.token

    call = asyncio.create_task(session.call(slow, "a long wait for updates"))
    await asyncio.to_thread(started.wait, 5)
    closing = asyncio.create_task(session.close())
    await asyncio.sleep(0.2)
    assert sdk.logouts == [] and not closing.done()  # the call still holds a connection
    release.set()
    await closing
    order.append("logged out")
    assert await call == 1
    assert order == ["call returned", "logged out"] and sdk.logouts == [1]


async def test_reads_follow_the_sessions_retry_policy() -> None:
    from adapters.base import RetryableError
    from adapters.retry import RetryPolicy

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    session = FakeSession(FakeSdk())
    session.read_retry = RetryPolicy(attempts=3, first_delay=0.5, max_delay=0.5, sleep=sleep,
                                     random=lambda: 1.0)
    calls: list[int] = []

    def busy(client: Client) -> int:
        calls.append(client.token)
        raise RetryableError("busy")

    with pytest.raises(RetryableError, match="busy"):
        await session.call(busy, "reading", idempotent=True)
    assert len(calls) == 3 and slept == [0.5, 0.5]
    await session.close()
