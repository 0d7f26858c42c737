"""One vCenter session per connector; every blocking pyvmomi call runs on a worker thread.

:meth:`VSphereSession.call` logs in lazily, and when vCenter answers NotAuthenticated
(the session expired or was terminated) logs in again on the same SOAP stub, so managed
objects obtained earlier stay usable, and retries the call once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from adapters.base import AdapterError, secret_from_env
from adapters.retry import retrying
from adapters.vsphere.faults import fault_name, translate

T = TypeVar("T")

#: Makes the SOAP stub a session logs in on: (host, port, TLS context, timeout) -> stub.
StubFactory = Callable[[str, int, ssl.SSLContext, float], Any]


def soap_stub(host: str, port: int, ssl_ctx: ssl.SSLContext, timeout: float) -> Any:
    """pyVmomi's stub (the default :data:`StubFactory`)."""
    from pyVim.connect import SmartStubAdapter

    return SmartStubAdapter(host=host, port=port, sslContext=ssl_ctx,
                            httpConnectionTimeout=timeout)


class CAFileError(ValueError):
    """ca_file cannot be used as a set of trusted certificates (the message says why)."""


def ssl_context(insecure: bool, ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context for the connector. Raises CAFileError when ca_file is not a readable
    PEM file of certificates."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        if ca_file is None:
            raise
        raise CAFileError(f"ca_file {str(ca_file)!r} cannot be used: {_ssl_problem(exc)}") from exc


def _ssl_problem(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if "NO_CERTIFICATE_OR_CRL_FOUND" in reason or "PEM" in reason or "NO_START_LINE" in reason:
            return f"it holds no PEM certificate ({exc.library or 'SSL'}: {reason})"
        return f"{exc.library or 'SSL'}: {reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class VSphereSession:
    """A logged-in pyvmomi ServiceInstance shared by one connector's tasks."""

    def __init__(self, host: str, port: int, user_env: str, password_env: str,
                 ssl_ctx: ssl.SSLContext, timeout: float = 120.0,
                 connect: StubFactory = soap_stub) -> None:
        self.host = host
        self.make_stub = connect
        self.port = port
        self.user_env = user_env
        self.password_env = password_env
        self.ssl = ssl_ctx
        self.timeout = timeout
        self._si: Any = None
        self._lock = threading.Lock()
        self._generation = 0
        self.logins = 0

    @property
    def netloc(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    # ------------------------------------------------------------ login
    def _credentials(self) -> tuple[str, str]:
        return secret_from_env(self.user_env), secret_from_env(self.password_env)

    def _connect(self) -> Any:
        from pyVmomi import vim

        user, password = self._credentials()
        stub = None
        try:
            stub = self.make_stub(self.host, self.port, self.ssl, self.timeout)
            si: Any = vim.ServiceInstance("ServiceInstance", stub)
            si.content.sessionManager.Login(user, password, None)
        except Exception as exc:
            if stub is not None:
                stub.DropConnections()
            raise self._login_error(exc, user) from None
        self.logins += 1
        return si

    def _login_error(self, exc: BaseException, user: str) -> AdapterError:
        if fault_name(exc) == "InvalidLogin":
            return translate(exc, f"logging in to {self.netloc} as {user} "
                                  f"(password from ${self.password_env})")
        return translate(exc, f"connecting to {self.netloc}")

    def _relogin(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # another thread already logged in again
            user, password = self._credentials()
            try:
                self._si.content.sessionManager.Login(user, password, None)
            except Exception as exc:
                raise self._login_error(exc, user) from None
            self._generation += 1
            self.logins += 1

    def service_instance(self) -> Any:
        with self._lock:
            if self._si is None:
                self._si = self._connect()
            return self._si

    # ------------------------------------------------------------ calls
    def call_sync(self, fn: Callable[[Any], T], doing: str) -> T:
        """Run ``fn(si)`` here (a worker thread); re-login once on NotAuthenticated."""
        si = self.service_instance()
        generation = self._generation
        try:
            try:
                return fn(si)
            except Exception as exc:
                if fault_name(exc) != "NotAuthenticated":
                    raise
            self._relogin(generation)
            return fn(si)
        except AdapterError:
            raise
        except Exception as exc:
            raise translate(exc, doing) from exc

    async def call(self, fn: Callable[[Any], T], doing: str, *, idempotent: bool = False) -> T:
        """``fn(si)`` on a worker thread. ``idempotent`` calls (reads) are retried after a
        timeout or a dropped connection; a call that creates something is not (a second
        ImportVApp would import twice)."""
        if idempotent:
            return await retrying(lambda: asyncio.to_thread(self.call_sync, fn, doing), doing)
        return await asyncio.to_thread(self.call_sync, fn, doing)

    @property
    def cookie(self) -> str:
        """``vmware_soap_session=...`` for HTTP requests outside SOAP (NFC uploads)."""
        raw = self._si._stub.cookie if self._si is not None else ""
        morsel = SimpleCookie(raw).get("vmware_soap_session")
        return f"vmware_soap_session={morsel.value}" if morsel else ""

    @property
    def session_key(self) -> str:
        morsel = SimpleCookie(self._si._stub.cookie).get("vmware_soap_session")
        return morsel.value.strip('"') if morsel else ""

    def device_url(self, url: str) -> str:
        """An NFC device URL with the ``*`` host replaced by the vCenter we talk to."""
        parts = urlsplit(url)
        if parts.hostname in ("*", None) or parts.netloc.startswith("*"):
            parts = parts._replace(netloc=self.netloc)
        return urlunsplit(parts)

    async def close(self) -> None:
        si, self._si = self._si, None
        if si is not None:
            def logout() -> None:
                with contextlib.suppress(Exception):  # expired: nothing to release
                    si.content.sessionManager.Logout()
                si._stub.DropConnections()

            await asyncio.to_thread(logout)


_SHARED: dict[tuple[Any, ...], list[Any]] = {}
_SHARED_LOCK = threading.Lock()


def acquire(key: tuple[Any, ...], make: Callable[[], VSphereSession]) -> VSphereSession:
    """The connector's shared session (one login per connector), counting its users."""
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None:
            entry = _SHARED[key] = [make(), 0]
        entry[1] += 1
        return entry[0]  # type: ignore[no-any-return]


async def release(key: tuple[Any, ...], session: VSphereSession) -> None:
    """Drop one user; the last one logs out."""
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or entry[0] is not session:
            last = True
        else:
            entry[1] -= 1
            last = entry[1] <= 0
            if last:
                del _SHARED[key]
    if last:
        await session.close()
