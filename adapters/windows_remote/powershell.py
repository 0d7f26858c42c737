"""PowerShell on a Windows host over WinRM (pypsrp), one runspace per host, user and password.

Every call is a :class:`Script`: a script block whose values are *parameters*
(``param($Name, ...)`` bound with pypsrp's ``add_parameters``), never text pasted into the
script, so a value with ``'``, ``"``, `````` or ``$(...)`` reaches the cmdlet as plain text. The
block runs with ``$ErrorActionPreference = 'Stop'`` (a cmdlet's error ends it) and its output
is returned as one JSON array (``ConvertTo-Json -InputObject @(...) -Depth N -Compress``).
Errors keep the cmdlet's message and FullyQualifiedErrorId; the password is in no message.

The runner is injected (:class:`RemoteClients.connect`): tests replace pypsrp with one that
records each script and its parameters and answers like the cmdlets. Calls run on worker
threads (:class:`adapters.blocking.Session`), one at a time per runspace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from adapters.base import (
    AdapterError,
    AuthError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RetryableError,
    error_words,
    secret_from_env,
)
from adapters.blocking import Session, SessionKey, SessionPool
from adapters.retry import DEFAULT, RetryPolicy, retrying
from adapters.windows_remote.smb_copy import COPY_RETRY

if TYPE_CHECKING:
    from adapters.windows_remote.winrm_settings import WindowsRemoteSettings

T = TypeVar("T")
log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_INT32 = range(-(2**31), 2**31)
#: System.Management.Automation.ErrorCategory (pypsrp hands over the number)
_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected", "InvalidArgument",
    "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError",
    "NotImplemented", "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout",
    "SyntaxError", "ParserError", "PermissionDenied", "ResourceBusy", "ResourceExists",
    "ResourceUnavailable", "ReadError", "WriteError", "FromStdErr", "SecurityError",
    "ProtocolError", "ConnectionError", "AuthenticationError", "LimitsExceeded", "QuotaExceeded",
    "NotEnabled",
)
_NOT_FOUND = frozenset({"ObjectNotFound"})
_DENIED = frozenset({"PermissionDenied", "SecurityError", "AuthenticationError"})
_TRANSIENT = frozenset({"ResourceBusy", "OperationTimeout", "ConnectionError"})
#: HTTP answers of a host or proxy too busy or restarting (the request was not run)
_BUSY = frozenset({429, 502, 503, 504})
#: of those, the answers of the host itself: it did not run the request (a gateway's 502/504
#: may come after the host ran it)
_NOT_RUN = frozenset({429, 503})
#: WSMan fault: the shell (runspace) is gone, e.g. after the host's WinRM service restarted
_SHELL_GONE = 2150858843


@dataclass(frozen=True)
class Endpoint:
    """Where WinRM listens and who logs in (the names of the variables, not their values)."""

    host: str
    user_env: str
    password_env: str
    auth: str = "ntlm"
    https: bool = True
    port: int | None = None
    #: True: the system's CAs; False: no check (insecure); a path: that CA bundle
    cert_validation: bool | str = True

    @classmethod
    def of(cls, settings: WindowsRemoteSettings) -> Endpoint:
        validation: bool | str = (False if settings.insecure else
                                  str(settings.ca_file) if settings.ca_file is not None else True)
        return cls(settings.host, settings.user_env, settings.password_env, settings.auth,
                   settings.https, settings.winrm_port, validation)

    @property
    def url(self) -> str:
        port = self.port or (5986 if self.https else 5985)
        return f"{'https' if self.https else 'http'}://{self.host}:{port}/wsman"


@dataclass(frozen=True)
class PSError:
    """One record of PowerShell's error stream (or the terminating error)."""

    message: str
    #: FullyQualifiedErrorId, e.g. InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM
    error_id: str = ""
    category: str = "NotSpecified"


@dataclass(frozen=True)
class PSResult:
    #: the pipeline's output, as strings (a Script's is one JSON text)
    output: list[str]
    errors: list[PSError] = field(default_factory=list)
    #: the pipeline ended in a terminating error
    failed: bool = False


class HostBusyError(RetryableError):
    """WinRM refused the request before running it (HTTP 429, 503): safe to send again, even a
    script that creates something."""


class PSConnection(Protocol):
    """An open runspace on one host (blocking)."""

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult: ...

    def close(self) -> None: ...


#: opens a runspace: (endpoint, user, password, timeout in seconds) -> connection
Connect = Callable[[Endpoint, str, str, float], PSConnection]


@dataclass(frozen=True)
class Script:
    """A script block with its parameters; see the module docstring."""

    doing: str
    body: str
    parameters: Mapping[str, Any]
    depth: int = 4

    def __post_init__(self) -> None:
        bad = [name for name in self.parameters if not _IDENTIFIER.match(name)]
        if bad:
            raise ValueError(f"PowerShell parameter names must be identifiers: {bad}")

    @property
    def text(self) -> str:
        names = ", ".join(f"${name}" for name in self.parameters)
        return (f"param({names})\n"
                "$ErrorActionPreference = 'Stop'\n"
                "$ProgressPreference = 'SilentlyContinue'\n"
                f"ConvertTo-Json -InputObject @(\n{self.body}\n) -Depth {self.depth} -Compress")


def script(doing: str, body: str, **parameters: Any) -> Script:
    return Script(doing, body, parameters)


def parse_output(result: PSResult, where: str) -> list[Any]:
    """The JSON array a Script printed."""
    text = "".join(result.output).strip()
    try:
        value = json.loads(text) if text else []
    except json.JSONDecodeError as exc:
        raise PlatformError(f"{where}: the script's output is not JSON ({exc}): {text[:200]!r}") from None
    # a script that prints one object itself (not through Script.text) is one element
    return value if isinstance(value, list) else [value]


def translate_errors(errors: list[PSError], where: str) -> AdapterError:
    """The adapter error for PowerShell's error records, keeping the cmdlet's message and id."""
    first = errors[0] if errors else PSError("the pipeline failed without an error record")
    text = f"{where} failed: {first.message}" + (f" [{first.error_id}]" if first.error_id else "")
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error(s): {errors[1].message})"
    if first.category in _NOT_FOUND:
        return NotFoundError(text)
    if first.category in _DENIED:
        return AuthError(text)
    if first.category in _TRANSIENT:
        return RetryableError(text)
    return PlatformError(text)


def translate_transport(exc: BaseException, where: str) -> AdapterError:
    """The adapter error for a failure of WinRM itself (not of a cmdlet)."""
    name = type(exc).__name__
    code = getattr(exc, "code", None)
    if name == "AuthenticationError" or (name == "WinRMTransportError" and code == 401):
        return AuthError(f"{where}: WinRM rejected the credentials")
    if name in ("Timeout", "ReadTimeout", "ConnectTimeout") or isinstance(exc, TimeoutError):
        return PlatformTimeoutError(f"{where}: no answer in time")
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        # not transient: trying again cannot help until the settings change
        return PlatformError(f"{where}: the host's WinRM certificate could not be verified "
                             f"({error_words(exc)}); "
                             "set ca_file to the CA bundle (PEM) that signed it, or insecure: true "
                             "(labs only)")
    if name == "WinRMTransportError" and code in _BUSY:
        kind = HostBusyError if code in _NOT_RUN else RetryableError
        return kind(f"{where}: WinRM answered HTTP {code} (the host or a proxy in front of it is "
                    "busy or restarting)")
    if name in ("ChunkedEncodingError", "ContentDecodingError") or "IncompleteRead" in str(exc):
        return RetryableError(f"{where}: the connection dropped in the middle of WinRM's answer")
    if name in ("ConnectionError", "SSLError") or isinstance(exc, OSError):
        return RetryableError(f"{where}: connection failed: {error_words(exc)}")
    if name == "WSManFaultError":
        reason = getattr(exc, "reason", None) or error_words(exc)
        return PlatformError(f"{where} failed: WSMan fault {code}: {reason}")
    return PlatformError(f"{where} failed: {error_words(exc)}")


class PowerShellSession(Session[PSConnection]):
    """A runspace on one host as one user (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, connect: Connect, timeout: float,
                 read_retry: RetryPolicy = DEFAULT) -> None:
        super().__init__(endpoint.host, read_retry)
        self.remote = endpoint
        self.connect = connect
        self.timeout = timeout
        self._serial = threading.Lock()

    def call_sync(self, fn: Callable[[PSConnection], T], doing: str) -> T:
        with self._serial:  # one pipeline at a time in the runspace
            return super().call_sync(fn, doing)

    def login(self) -> PSConnection:
        ep = self.remote
        user, password = secret_from_env(ep.user_env), secret_from_env(ep.password_env)
        try:
            return self.connect(ep, user, password, self.timeout)
        except AdapterError:
            raise
        except Exception as exc:
            raise translate_transport(
                exc, f"{ep.url}: logging in as {user} (password from ${ep.password_env})") from None

    def login_again(self, client: PSConnection) -> PSConnection:
        self.logout(client)
        return self.login()

    def expired(self, exc: BaseException) -> bool:
        name = type(exc).__name__
        return name == "InvalidRunspacePoolStateError" or (
            name == "WSManFaultError" and getattr(exc, "code", None) == _SHELL_GONE)

    def logout(self, client: PSConnection) -> None:
        with contextlib.suppress(Exception):  # a runspace the host already dropped
            client.close()

    def error(self, exc: Exception, doing: str) -> AdapterError:
        return translate_transport(exc, f"{self.remote.url}: {doing}")

    async def run(self, ps: Script, *, idempotent: bool = False) -> list[Any]:
        """Run ``ps`` on a worker thread; its JSON output, or the cmdlet's error."""
        where = f"{self.remote.host}: {ps.doing}"

        def call(conn: PSConnection) -> PSResult:
            return conn.run(ps.text, dict(ps.parameters))

        if idempotent:
            result = await self.call(call, ps.doing, idempotent=True)
        else:  # run once, unless the host said it did not run it
            result = await retrying(lambda: self.call(call, ps.doing), ps.doing, self.read_retry,
                                    only=(HostBusyError,))
        if result.failed or result.errors:
            raise translate_errors(result.errors, where)
        return parse_output(result, where)


@dataclass(frozen=True)
class RemoteClients:
    """How an adapter reaches a Windows host; tests inject the runner and short timings."""

    connect: Connect = field(default_factory=lambda: pypsrp_connect)
    #: WinRM operation timeout (seconds)
    timeout: float = 120.0
    #: SMB copy: bytes per write (each a worker-thread call: a cancel stops between chunks)
    chunk_size: int = 4 << 20
    #: seconds between rounds of a watch (first, longest)
    poll: tuple[float, float] = (15.0, 300.0)
    #: how an SMB copy (or a size, a removal) whose connection was lost is tried again
    smb_retry: RetryPolicy = COPY_RETRY
    #: how a script that can run twice (a query, a setting) is tried again after a dropped
    #: connection, a timeout or a busy host
    read_retry: RetryPolicy = DEFAULT
    sessions: SessionPool[PowerShellSession] | None = None

    @property
    def pool(self) -> SessionPool[PowerShellSession]:
        return self.sessions if self.sessions is not None else SESSIONS


def session_key(endpoint: Endpoint, clients: RemoteClients) -> SessionKey:
    return SessionKey.of(endpoint.url, secret_from_env(endpoint.user_env),
                         secret_from_env(endpoint.password_env), endpoint.auth,
                         str(endpoint.cert_validation), clients.connect, clients.timeout)


def acquire(endpoint: Endpoint, clients: RemoteClients) -> tuple[SessionKey, PowerShellSession]:
    """The shared session of ``endpoint`` (release it with ``clients.pool.release``)."""
    key = session_key(endpoint, clients)
    return key, clients.pool.acquire(
        key, lambda: PowerShellSession(endpoint, clients.connect, clients.timeout, clients.read_retry))


# ---------------------------------------------------------------- pypsrp
def _tagged(value: Any) -> Any:
    """pypsrp sends every int as Int32: larger ones (memory in bytes) must say Int64."""
    from pypsrp.serializer import TaggedValue

    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value not in _INT32:
        return TaggedValue("I64", value)
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    return value


def _error(record: Any) -> PSError:
    category = getattr(record, "category", None)
    name = _CATEGORIES[category] if isinstance(category, int) and 0 <= category < len(_CATEGORIES) \
        else "NotSpecified"
    # the record's ToString (the exception's message); pypsrp's str() of a record without one
    # is "None": then ErrorCategory_Message
    shown = getattr(record, "_to_string", None)
    message = str(shown).strip() if shown else str(getattr(record, "message", "") or "")
    return PSError(message, str(getattr(record, "fq_error", "") or ""), name)


def _quietly(close: Callable[[], object], doing: str) -> None:
    """A close whose failure must not hide the call's result or error (a pipeline that did
    not finish cannot be closed; the host drops it with the runspace)."""
    try:
        close()
    except Exception as exc:
        log.debug("%s failed: %s: %s", doing, type(exc).__name__, exc)


class PypsrpConnection:
    """A pypsrp RunspacePool, opened."""

    def __init__(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> None:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        operation = max(int(timeout), 5)
        self.wsman = WSMan(endpoint.host, port=endpoint.port, username=user, password=password,
                           ssl=endpoint.https, auth=endpoint.auth,
                           cert_validation=endpoint.cert_validation,
                           operation_timeout=operation, read_timeout=operation + 10,
                           connection_timeout=30)
        self.pool = RunspacePool(self.wsman)
        try:
            self.pool.open()
        except BaseException:
            _quietly(self.wsman.close, "closing the WinRM session of a failed login")
            raise

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult:
        from pypsrp.powershell import PowerShell

        ps = PowerShell(self.pool)
        try:
            ps.add_script(script)
            if parameters:
                ps.add_parameters({name: _tagged(value) for name, value in parameters.items()})
            output = ps.invoke()
            return PSResult([str(o) for o in output], [_error(r) for r in ps.streams.error],
                            bool(ps.had_errors))
        finally:  # the host keeps a pipeline until it is closed
            _quietly(ps.close, "closing a PowerShell pipeline")

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            self.wsman.close()


def pypsrp_connect(endpoint: Endpoint, user: str, password: str, timeout: float) -> PSConnection:
    return PypsrpConnection(endpoint, user, password, timeout)


#: runspaces of this process, one per host, user and password
SESSIONS: SessionPool[PowerShellSession] = SessionPool()
