"""XenAPI sessions: what is XenServer's in a :class:`adapters.blocking.Session`.

The ``XenAPI`` package's Session is an xmlrpc.client ServerProxy: one HTTP connection, not
safe to share between threads, so a session's calls run one at a time (the event watch has
a session of its own, :mod:`adapters.xenserver.xen_watch`). XenAPI failures become adapter
errors that keep xapi's code; neither the password nor the session reference is ever put in
a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import select
import socket
import ssl
import threading
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from xml.parsers.expat import ExpatError

from adapters.base import (
    AdapterError,
    AuthError,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RefusedError,
    RetryableError,
    error_words,
    secret_from_env,
    untrusted_certificate,
    untrusted_words,
)
from adapters.blocking import Session, SessionKey, SessionPool
from adapters.retry import (
    DEFAULT,
    REFUSED_STATUSES,
    TRANSIENT_STATUSES,
    RetryPolicy,
    retry_after,
    retrying,
)
from adapters.xenserver.xapi_replay import Journal

T = TypeVar("T")

_NOT_FOUND = frozenset({"UUID_INVALID", "HANDLE_INVALID"})
_NO_SPACE = frozenset({"SR_FULL"})
_AUTH = frozenset({"SESSION_AUTHENTICATION_FAILED", "RBAC_PERMISSION_DENIED"})


def failure_code(exc: BaseException) -> str | None:
    """xapi's error code of a XenAPI.Failure (None for anything else)."""
    details = getattr(exc, "details", None)
    if type(exc).__name__ == "Failure" and isinstance(details, list) and details:
        return str(details[0])
    return None


def translate_details(details: list[object], doing: str) -> AdapterError:
    """The adapter error for xapi's ErrorDescription ``[code, param...]``, keeping both."""
    code = str(details[0]) if details else "UNKNOWN_ERROR"
    # SESSION_INVALID's parameter is the session reference: a secret
    params = [] if code == "SESSION_INVALID" else [str(p) for p in details[1:]]
    text = f"{doing} failed: {code}" + (f" ({', '.join(params)})" if params else "")
    if code in _AUTH:
        return AuthError(text)
    if code in _NOT_FOUND:
        return NotFoundError(text)
    if code in _NO_SPACE:
        return InsufficientSpaceError(text)
    return PlatformError(text)


def translate(exc: BaseException, doing: str) -> AdapterError:
    """The adapter error for a failed call, keeping xapi's code and parameters."""
    if failure_code(exc) is not None:
        return translate_details(list(getattr(exc, "details", [])), doing)
    if (untrusted := untrusted_certificate(exc)) is not None:
        return PlatformError(f"{doing}: {untrusted_words(untrusted)}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return PlatformTimeoutError(f"{doing}: no answer in time")
    if isinstance(exc, xmlrpc.client.ProtocolError):  # an HTTP status; its text quotes the URL
        text = f"{doing}: HTTP {exc.errcode} {exc.errmsg}"
        if exc.errcode in TRANSIENT_STATUSES:
            cls = RefusedError if exc.errcode in REFUSED_STATUSES else RetryableError
            return cls(text, retry_after=retry_after((exc.headers or {}).get("Retry-After")))
        return PlatformError(text)
    if isinstance(exc, ExpatError | http.client.IncompleteRead):
        # xmlrpc.client reads the answer in blocks until the connection ends: one cut short is
        # a broken XML document
        return RetryableError(f"{doing}: the answer was cut short (not a whole XML-RPC answer)")
    if isinstance(exc, (ConnectionError, http.client.HTTPException, OSError)):
        return RetryableError(f"{doing}: connection failed: {error_words(exc)}")
    if isinstance(exc, xmlrpc.client.Fault):
        return PlatformError(f"{doing} failed: XML-RPC fault {exc.faultCode}: {exc.faultString}")
    return PlatformError(f"{doing} failed: {error_words(exc)}")


class _Transport(xmlrpc.client.SafeTransport):
    """HTTP or HTTPS with a TLS context and a socket timeout (the SDK's has none) that sends
    each request once. ``xmlrpc.client.Transport.request`` sends a request again after the
    connection dropped (closed without an answer, ECONNRESET, EPIPE), when xapi may already
    have acted on it: a second VM or VDI nobody records. What is sent again is the session's
    to decide (:meth:`XapiSession.call`); a kept-alive connection the server closed while it
    was idle is replaced before a request is written to it, never after."""

    def __init__(self, https: bool, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context)
        self.https = https
        self.timeout = timeout

    def request(self, host: Any, handler: str, request_body: bytes, verbose: bool = False) -> Any:
        return self.single_request(host, handler, request_body, verbose)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0]:
            if not _closed_by_peer(self._connection[1]):
                return self._connection[1]
            self.close()
        chost, self._extra_headers, _ = self.get_host_info(host)
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(chost, timeout=self.timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(chost, timeout=self.timeout)
        self._connection = host, conn
        return conn


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """True when an idle kept-alive connection is readable: the server closed it (or sent
    bytes nobody asked for), so no request can go out on it."""
    if conn.sock is None:
        return False
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):  # already closed here
        return True
    return bool(readable)


def tls_context(insecure: bool, ca_file: Path | None) -> ssl.SSLContext:
    from adapters.vsphere.session import ssl_context

    return ssl_context(insecure, ca_file)


class XapiSession(Session[Any]):
    """A logged-in ``XenAPI.Session`` of one pool coordinator, user and password."""

    def __init__(self, url: str, user_env: str, password_env: str, context: ssl.SSLContext,
                 timeout: float, read_retry: RetryPolicy = DEFAULT) -> None:
        super().__init__(url, read_retry)
        self.url = url
        self.user_env = user_env
        self.password_env = password_env
        self.context = context
        self.timeout = timeout
        self._serial = threading.Lock()

    def call_sync(self, fn: Callable[[Any], T], doing: str) -> T:
        with self._serial:  # one XML-RPC connection per session
            return super().call_sync(fn, doing)

    def _new_proxy(self) -> Any:
        import XenAPI

        transport = _Transport(self.url.startswith("https:"), self.context, self.timeout)
        return XenAPI.Session(self.url + "/", transport=transport)

    def login(self) -> Any:
        proxy = self._new_proxy()
        try:
            self._log_in(proxy)
        except BaseException:
            with contextlib.suppress(Exception):  # its connection, else left open
                proxy("close")()
            raise
        return proxy

    def login_again(self, client: Any) -> Any:
        self._log_in(client)
        return client

    def _log_in(self, proxy: Any) -> None:
        user, password = secret_from_env(self.user_env), secret_from_env(self.password_env)
        try:
            proxy.login_with_password(user, password, "2.0", "layerbot")
        except Exception as exc:
            if failure_code(exc) == "SESSION_AUTHENTICATION_FAILED":
                raise AuthError(f"XenServer {self.url}: logging in as {user} (password from "
                                f"${self.password_env}) failed: SESSION_AUTHENTICATION_FAILED"
                                ) from None
            raise translate(exc, f"XenServer {self.url}: logging in") from None

    def expired(self, exc: BaseException) -> bool:
        # XenAPI logs in again itself on SESSION_INVALID, up to 3 times; then a Fault 401/500
        return failure_code(exc) == "SESSION_INVALID" or (
            isinstance(exc, xmlrpc.client.Fault) and exc.faultCode in (401, 500)
            and "session" in exc.faultString.lower())

    def logout(self, client: Any) -> None:
        with contextlib.suppress(Exception):  # expired or unreachable: nothing to release
            client.xenapi.session.logout()
        with contextlib.suppress(Exception):
            client("close")()

    def error(self, exc: Exception, doing: str) -> AdapterError:
        return translate(exc, f"XenServer {self.url}: {doing}")

    async def session_ref(self) -> str:
        """The session reference for HTTP handlers (import_raw_vdi); a secret: never shown.
        Read on a worker thread: a log-in under way holds the session's lock for a while."""
        return await self.call(lambda c: str(c.handle), "reading the session", idempotent=True)

    async def call(self, fn: Callable[[Any], T], doing: str, *, idempotent: bool = False) -> T:
        """``fn(client)`` on a worker thread; the one place a XenServer call is retried, under
        the session's policy (attempts, budget, Retry-After within it). A read is run again
        after any transient failure. Any other call only after xapi refused a request unread
        (HTTP 429, 503): a connection that closed or timed out after the request was sent
        may come after xapi acted, so that call fails instead. The waits are the event
        loop's, the session free meanwhile and a cancel ends them; a cancel during a
        request that may create something waits for its answer (what it made is cleaned up
        after it, not while it is being made)."""
        if idempotent:
            return await super().call(fn, doing, idempotent=True)
        if not self.logged_in:  # retried as a read: nothing of this call has been sent yet
            await super().call(lambda c: None, "logging in", idempotent=True)
        try:
            return await retrying(lambda: _answered(asyncio.to_thread(self.call_sync, fn, doing)),
                                  doing, self.read_retry, only=(RefusedError,))
        except AdapterError as exc:
            if not exc.retryable or isinstance(exc, RefusedError):
                raise
            raise type(exc)(f"{exc}; not sent again: xapi may have acted on it",
                            retry_after=exc.retry_after) from exc

    async def xapi(self, doing: str, fn: Callable[[Any], T], *, idempotent: bool = False) -> T:
        """``fn(session.xenapi)`` on a worker thread. Run again after a refused request, it
        gets the answers of the requests already answered without sending them again
        (:mod:`adapters.xenserver.xapi_replay`)."""
        journal = Journal()
        return await self.call(lambda c: fn(journal.replaying(c)), doing, idempotent=idempotent)

    async def xapi_once(self, doing: str, fn: Callable[[Any], T]) -> T:
        """``fn(session.xenapi)`` on a worker thread, once: for a caller whose own policy
        retries it (the event watch), so that one layer decides; a cancel does not wait."""
        return await asyncio.to_thread(self.call_sync, lambda c: fn(c.xenapi), doing)


async def _answered(call: Awaitable[T]) -> T:
    """``await call``; a cancel waits for the call to finish before it goes on (a request on
    a worker thread runs to its end anyway: the cleanup after the cancel must come later)."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


UPLOAD_RETRY = RetryPolicy(attempts=3, budget=1800.0, first_delay=5.0, max_delay=60.0)


@dataclass(frozen=True)
class Clients:
    """How the adapter reaches XenServer; tests inject short timeouts and their own pool."""

    #: XML-RPC socket timeout (seconds); an event.from waits ``event_wait`` on top
    timeout: float = 120.0
    #: longest single event.from (seconds); the watch loops until its deadline
    event_wait: float = 30.0
    #: seconds between polls of an upload's task (first, longest)
    task_poll: tuple[float, float] = (0.5, 5.0)
    #: an upload cut off is sent again whole, into the same VDI
    upload_retry: RetryPolicy = UPLOAD_RETRY
    #: how reads (calls safe to repeat) are retried after a transient failure, and any call
    #: after xapi refused one of its requests unread (HTTP 429, 503): the only retry layer
    read_retry: RetryPolicy = DEFAULT
    sessions: SessionPool[XapiSession] | None = None

    @property
    def pool(self) -> SessionPool[XapiSession]:
        return self.sessions if self.sessions is not None else SESSIONS


def session_key(url: str, user_env: str, password_env: str, insecure: bool,
                ca_file: Path | None, clients: Clients) -> SessionKey:
    return SessionKey.of(url, secret_from_env(user_env), secret_from_env(password_env),
                         insecure, str(ca_file), clients.timeout, clients.read_retry)


#: XenAPI sessions of this process, one per pool coordinator, user and password.
SESSIONS: SessionPool[XapiSession] = SessionPool()
