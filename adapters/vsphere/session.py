"""vCenter sessions: what is vSphere's in a :class:`adapters.blocking.Session`.

Sharing, thread offload and "log in again once, then retry" are :mod:`adapters.blocking`'s;
here are pyvmomi's login (a SOAP stub from an injectable factory), its expiry fault
(NotAuthenticated: log in again on the same stub, so managed objects obtained earlier stay
usable), its fault translation, the TLS context and the NFC cookie.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from adapters.base import AdapterError, secret_from_env
from adapters.blocking import Session, SessionPool
from adapters.retry import DEFAULT, RetryPolicy
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


class VSphereSession(Session[Any]):
    """A logged-in pyvmomi ServiceInstance (the client) shared by one vCenter's tasks."""

    def __init__(self, host: str, port: int, user_env: str, password_env: str,
                 ssl_ctx: ssl.SSLContext, timeout: float = 120.0,
                 connect: StubFactory = soap_stub, read_retry: RetryPolicy = DEFAULT) -> None:
        super().__init__(host if port == 443 else f"{host}:{port}", read_retry)
        self.host = host
        self.port = port
        self.make_stub = connect
        self.user_env = user_env
        self.password_env = password_env
        self.ssl = ssl_ctx
        self.timeout = timeout

    # ------------------------------------------------------------ the SDK's hooks
    def _credentials(self) -> tuple[str, str]:
        return secret_from_env(self.user_env), secret_from_env(self.password_env)

    def login(self) -> Any:
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
        return si

    def login_again(self, client: Any) -> Any:
        """On the same SOAP stub, so managed objects obtained earlier stay usable."""
        user, password = self._credentials()
        try:
            client.content.sessionManager.Login(user, password, None)
        except Exception as exc:
            raise self._login_error(exc, user) from None
        return client

    def expired(self, exc: BaseException) -> bool:
        return fault_name(exc) == "NotAuthenticated"

    def logout(self, client: Any) -> None:
        with contextlib.suppress(Exception):  # expired: nothing to release
            client.content.sessionManager.Logout()
        client._stub.DropConnections()

    def error(self, exc: Exception, doing: str) -> AdapterError:
        return translate(exc, doing)

    def _login_error(self, exc: BaseException, user: str) -> AdapterError:
        if fault_name(exc) == "InvalidLogin":
            return translate(exc, f"logging in to {self.endpoint} as {user} "
                                  f"(password from ${self.password_env})")
        return translate(exc, f"connecting to {self.endpoint}")

    @property
    def cookie(self) -> str:
        """``vmware_soap_session=...`` for HTTP requests outside SOAP (NFC uploads)."""
        raw = self._client._stub.cookie if self._client is not None else ""
        morsel = SimpleCookie(raw).get("vmware_soap_session")
        return f"vmware_soap_session={morsel.value}" if morsel else ""

    @property
    def session_key(self) -> str:
        morsel = SimpleCookie(self.client()._stub.cookie).get("vmware_soap_session")
        return morsel.value.strip('"') if morsel else ""

    def device_url(self, url: str) -> str:
        """An NFC device URL with the ``*`` host replaced by the vCenter we talk to."""
        parts = urlsplit(url)
        if parts.hostname in ("*", None) or parts.netloc.startswith("*"):
            parts = parts._replace(netloc=self.endpoint)
        return urlunsplit(parts)


#: vCenter sessions of this process, one per vCenter, user and password.
SESSIONS: SessionPool[VSphereSession] = SessionPool()
