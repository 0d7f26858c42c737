"""Translate pyvmomi faults and transport errors into layerbot's adapter errors.

The vCenter message is kept in the text; secrets never are (faults carry none).
pyvmomi is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from xml.parsers.expat import ExpatError

from adapters.base import (
    AdapterError,
    AuthError,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RetryableError,
)

_AUTH = ("InvalidLogin", "NotAuthenticated", "NoPermission", "InvalidPrivilege")
_SPACE = ("NoDiskSpace", "InsufficientStorageSpace", "FileTooLarge")
_NOT_FOUND = ("ManagedObjectNotFound", "NotFound", "FileNotFound", "InvalidDatastore",
              "InvalidDatastorePath")
_TIMEOUT = ("Timedout", "RequestCanceled")
#: pyvmomi's HTTPException("503 Service Unavailable") for a non-SOAP answer: a busy or restarting
#: vCenter (or a proxy in front of it) is worth another call
_BUSY_STATUS = re.compile(r"(429|502|503|504) ")
#: pyVim.connect's plain Exception when the version probe (vimServiceVersions.xml) got no answer
_NOT_ANSWERING = "is down or is not a VIM server"


def fault_message(exc: BaseException | None) -> str:
    """The human text of a vSphere fault (msg, else its localized messages, else its type)."""
    if exc is None:
        return "unknown error"
    msg = getattr(exc, "msg", None) or ""
    if not msg:
        messages = [m.message for m in getattr(exc, "faultMessage", None) or [] if m.message]
        msg = "; ".join(messages)
    if not msg and not hasattr(exc, "faultMessage"):  # not a vSphere fault: its own text
        msg = f"{type(exc).__name__}: {exc}" if str(exc) else ""
    return msg or type(exc).__name__


def fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def translate(exc: BaseException, doing: str) -> AdapterError:
    """Map ``exc`` (raised while ``doing`` something) to an AdapterError subclass."""
    if isinstance(exc, AdapterError):
        return exc
    name = fault_name(exc)
    text = f"vSphere: {doing} failed: {fault_message(exc)}"
    if name in _AUTH:
        return AuthError(text)
    if name in _SPACE:
        return InsufficientSpaceError(text)
    if name in _NOT_FOUND:
        return NotFoundError(text)
    if name in _TIMEOUT or isinstance(exc, socket.timeout | TimeoutError):
        return PlatformTimeoutError(text)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PlatformError(
            f"vSphere: {doing} failed: the server's TLS certificate is not trusted "
            f"({exc.verify_message}); set ca_file, or insecure: true for a lab")
    if isinstance(exc, http.client.HTTPException) and _BUSY_STATUS.match(str(exc)):
        return RetryableError(f"vSphere: {doing} failed: HTTP {exc} (vCenter is busy or restarting)")
    if isinstance(exc, ExpatError | http.client.IncompleteRead):
        # pyvmomi parses the answer as it arrives: one cut short is a broken XML document
        return RetryableError(f"vSphere: {doing} failed: the answer was cut short or is not SOAP "
                              f"({fault_message(exc)})")
    if _NOT_ANSWERING in str(exc):
        return RetryableError(text)
    if isinstance(exc, ConnectionError | OSError):
        return PlatformTimeoutError(f"vSphere: {doing} failed: cannot reach the server: {exc}")
    return PlatformError(text)
