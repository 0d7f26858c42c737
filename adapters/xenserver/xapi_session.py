"""XenAPI sessions: what is XenServer's in a :class:`adapters.blocking.Session`.

The ``XenAPI`` package's Session is an xmlrpc.client ServerProxy: one HTTP connection, not
safe to share between threads, so a session's calls run one at a time (the event watch has
a session of its own, :mod:`adapters.xenserver.xen_watch`). XenAPI failures become adapter
errors that keep xapi's code; neither the password nor the session reference is ever put in
a message.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable
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
from adapters.retry import DEFAULT, REFUSED_STATUSES, TRANSIENT_STATUSES, RetryPolicy, retry_after

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
    """HTTP or HTTPS with a TLS context and a socket timeout (the SDK's has none). One XML-RPC
    request refused before xapi acted on it (HTTP 429, 503) is sent again after the policy's
    back-off, whatever it does: a create done in several requests is never repeated whole."""

    def __init__(self, https: bool, context: ssl.SSLContext, timeout: float,
                 retry: RetryPolicy = DEFAULT) -> None:
        super().__init__(context=context)
        self.https = https
        self.timeout = timeout
        self.retry = retry

    def request(self, host: Any, handler: str, request_body: bytes, verbose: bool = False) -> Any:
        started, attempt = self.retry.clock(), 1
        while True:
            try:
                return super().request(host, handler, request_body, verbose)
            except xmlrpc.client.ProtocolError as exc:
                if exc.errcode not in REFUSED_STATUSES or attempt >= self.retry.attempts:
                    raise
                wait = self.retry.delay(attempt, RefusedError(
                    "", retry_after=retry_after((exc.headers or {}).get("Retry-After"))))
                if self.retry.clock() + wait - started > self.retry.budget:
                    raise
                time.sleep(wait)  # a worker thread's: the session's calls run one at a time
                attempt += 1

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(chost, timeout=self.timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(chost, timeout=self.timeout)
        self._connection = host, conn
        return conn


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

        transport = _Transport(self.url.startswith("https:"), self.context, self.timeout,
                               self.read_retry)
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

    async def xapi(self, doing: str, fn: Callable[[Any], T], *, idempotent: bool = False) -> T:
        """``fn(session.xenapi)`` on a worker thread."""
        return await self.call(lambda c: fn(c.xenapi), doing, idempotent=idempotent)


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
    #: how reads (calls safe to repeat) are retried after a transient failure, and any one
    #: XML-RPC request after xapi refused it unread (HTTP 429, 503)
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
