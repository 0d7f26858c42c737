"""Sessions of blocking platform SDKs (pyvmomi today; XenAPI, Azure's sync clients next).

A :class:`Session` holds one logged-in SDK client and runs every call on a worker thread, so
the event loop never waits for the platform. It logs in lazily; when a call fails because
the platform dropped the session (expired, terminated), it logs in again once and retries
that call. A platform subclasses it with its four SDK hooks (``login``, ``login_again``,
``expired``, ``logout``) and, optionally, ``error`` to translate the SDK's exceptions.

A :class:`SessionPool` shares one session per :class:`SessionKey` (endpoint, user and a
digest of the secret: the key never holds the secret) between every adapter and task that
talks to that endpoint as that user, counts its users, and logs out when the last one
releases it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from adapters.base import AdapterError, PlatformError
from adapters.retry import DEFAULT, RetryPolicy, retrying

C = TypeVar("C")
T = TypeVar("T")
S = TypeVar("S", bound="Session")  # type: ignore[type-arg]


@dataclass(frozen=True)
class SessionKey:
    """Who talks to which endpoint. A changed secret is another key (another login)."""

    endpoint: str
    user: str
    secret_digest: str
    #: anything else that makes a session different (TLS settings, the client factory)
    options: tuple[Hashable, ...] = ()

    @classmethod
    def of(cls, endpoint: str, user: str, secret: str, *options: Hashable) -> SessionKey:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return cls(endpoint.lower(), user, digest, tuple(options))


class SessionClosedError(AdapterError):
    """A call on a session after its last user released it."""


class Session(ABC, Generic[C]):
    """One logged-in client of a blocking SDK; see the module docstring."""

    def __init__(self, endpoint: str, read_retry: RetryPolicy = DEFAULT) -> None:
        self.endpoint = endpoint
        #: how ``idempotent`` calls are retried after a retryable error
        self.read_retry = read_retry
        self.logins = 0
        self._client: C | None = None
        self._lock = threading.Lock()
        #: bumped by each re-login, so threads that saw the same expiry log in only once
        self._generation = 0
        #: set by close(): a late call must not make a login nobody logs out
        self._closed = False
        #: calls under way on worker threads; close() logs out only once they have returned
        #: (an SDK's logout drops its connections: one still in use would leak)
        self._in_flight = 0
        self._idle = threading.Condition()

    # ------------------------------------------------------------ the SDK's hooks (blocking)
    @abstractmethod
    def login(self) -> C:
        """A new client, logged in. Raise an AdapterError naming the endpoint and user."""

    @abstractmethod
    def login_again(self, client: C) -> C:
        """Log ``client`` in again after its session expired; the client to use from now on
        (the same one where the SDK allows it: objects obtained through it stay usable)."""

    @abstractmethod
    def expired(self, exc: BaseException) -> bool:
        """True when ``exc`` says the platform no longer knows the session."""

    @abstractmethod
    def logout(self, client: C) -> None:
        """End the session and drop the client's connections; must not raise."""

    def error(self, exc: Exception, doing: str) -> AdapterError:
        """The AdapterError a failed call raises (its cause is kept by the caller)."""
        return PlatformError(f"{self.endpoint}: {doing} failed: {exc}")

    # ------------------------------------------------------------ calls
    def client(self) -> C:
        with self._lock:
            self._refuse_if_closed()
            if self._client is None:
                self._client = self.login()
                self.logins += 1
            return self._client

    def _log_in_again(self, generation: int) -> C:
        with self._lock:
            self._refuse_if_closed()
            assert self._client is not None
            if generation == self._generation:  # else another thread already did
                self._client = self.login_again(self._client)
                self._generation += 1
                self.logins += 1
            return self._client

    def call_sync(self, fn: Callable[[C], T], doing: str) -> T:
        """``fn(client)`` here (a worker thread); logs in again once if the session expired."""
        with self._idle:
            self._in_flight += 1
        try:
            return self._call_sync(fn, doing)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _call_sync(self, fn: Callable[[C], T], doing: str) -> T:
        client = self.client()
        generation = self._generation
        try:
            try:
                return fn(client)
            except Exception as exc:
                if not self.expired(exc):
                    raise
            return fn(self._log_in_again(generation))
        except AdapterError:
            raise
        except Exception as exc:
            raise self.error(exc, doing) from exc

    async def call(self, fn: Callable[[C], T], doing: str, *, idempotent: bool = False) -> T:
        """``fn(client)`` on a worker thread. ``idempotent`` calls (reads) are also retried
        after a timeout or a dropped connection; a call that creates something is not."""
        if idempotent:
            return await retrying(lambda: asyncio.to_thread(self.call_sync, fn, doing), doing,
                                  self.read_retry)
        return await asyncio.to_thread(self.call_sync, fn, doing)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SessionClosedError(f"{self.endpoint}: the session was closed (its last user released it)")

    @property
    def logged_in(self) -> bool:
        return self._client is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self, drain_seconds: float = 60.0) -> None:
        """Log out (idempotent) once the calls under way have returned (at most
        ``drain_seconds``: a call the platform never answers is not waited for forever);
        every later call is refused."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(self._wait_idle, drain_seconds)
            await asyncio.to_thread(self.logout, client)

    def _wait_idle(self, seconds: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=seconds)


class SessionPool(Generic[S]):
    """Sessions shared by key, reference-counted; the last release logs out."""

    def __init__(self) -> None:
        self._sessions: dict[SessionKey, tuple[S, int]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: SessionKey, make: Callable[[], S]) -> S:
        """The key's session (made by ``make`` for its first user); one more user."""
        with self._lock:
            session, users = self._sessions.get(key) or (make(), 0)
            self._sessions[key] = (session, users + 1)
            return session

    async def release(self, key: SessionKey, session: S) -> None:
        """One user fewer; the last one closes the session. A session that is no longer
        the key's (released too often) is closed at once."""
        with self._lock:
            shared, users = self._sessions.get(key, (None, 0))
            last = shared is not session or users <= 1
            if shared is session:
                if last:
                    del self._sessions[key]
                else:
                    self._sessions[key] = (session, users - 1)
        if last:
            await session.close()

    def shared(self) -> list[tuple[SessionKey, S, int]]:
        """Every session held now: its key, itself and how many users it has."""
        with self._lock:
            return [(key, session, users) for key, (session, users) in self._sessions.items()]

    def users(self, key: SessionKey) -> int:
        with self._lock:
            return self._sessions.get(key, (None, 0))[1]
