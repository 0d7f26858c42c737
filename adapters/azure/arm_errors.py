"""Azure's errors as layerbot adapter errors, keeping Azure's code and message (never a SAS
signature or a token)."""

from __future__ import annotations

import re
import ssl
from typing import Any

from adapters.base import AdapterError, AuthError, NotFoundError, PlatformError, RetryableError
from adapters.retry import retry_after

_AUTH_CODES = frozenset({"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
                         "InvalidAuthenticationTokenTenant", "ExpiredAuthenticationToken",
                         "LinkedAuthorizationFailed"})
_NOT_FOUND_CODES = frozenset({"ResourceNotFound", "NotFound", "ResourceGroupNotFound",
                              "GalleryImageNotFound", "SubscriptionNotFound"})
_RETRYABLE_CODES = frozenset({"TooManyRequests", "RetryableError", "InternalServerError",
                              "ServiceUnavailable", "OperationPreempted"})
#: a SAS signature, a bearer token or a client secret parameter in a URL or a message
_SECRETS = re.compile(r"((?:sig|client_secret|access_token|code)=)[^&\s\"']+|(Bearer )\S+", re.I)


def scrub(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class AzureAdapterError:
    """Mixed into the error classes below: Azure's error ``code`` (None: none given)."""

    code: str | None = None


class AzureAuthError(AuthError, AzureAdapterError):
    pass


class AzureNotFoundError(NotFoundError, AzureAdapterError):
    pass


class AzureRetryableError(RetryableError, AzureAdapterError):
    pass


class AzurePlatformError(PlatformError, AzureAdapterError):
    pass


def _code_and_message(exc: Any) -> tuple[str | None, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if not message:
        message = getattr(exc, "message", None) or str(exc)
    # azure-core prefixes "(Code) " and appends "Code: ...\nMessage: ..." lines
    message = str(message).split("\nCode:")[0].strip()
    if code and message.startswith(f"({code})"):
        message = message[len(code) + 2:].strip()
    return code, message


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc`` (azure-core and aiohttp wrap it)."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        # aiohttp's ClientConnectorCertificateError is one too, holding the real one
        if isinstance(found, ssl.SSLCertVerificationError) and hasattr(found, "verify_message"):
            return found
        seen.add(id(found))
        inner = getattr(found, "inner_exception", None) or getattr(found, "certificate_error", None)
        found = inner or found.__cause__ or found.__context__
    return None


def adapter_error(exc: Exception, doing: str) -> AdapterError:
    """The adapter error for an azure-core/azure-identity exception raised while ``doing``."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        IncompleteReadError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if (untrusted := _certificate_problem(exc)) is not None:
        # not worth another try: the same certificate comes back
        return AzurePlatformError(
            f"Azure: {doing}: the server's TLS certificate is not trusted "
            f"({untrusted.verify_message}): an intercepting proxy, or its CA is missing from "
            "this host's trust store")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return AzureRetryableError(f"Azure: {doing}: cannot reach Azure: {scrub(str(exc))}")
    if isinstance(exc, IncompleteReadError):
        # the connection dropped mid-answer, as after a reset: an HttpResponseError without a
        # status, which read as a refusal and failed a publish (or left a staging disk) on
        # one cut answer
        return AzureRetryableError(f"Azure: {doing}: the answer was cut short (the connection "
                                   "dropped)")
    code, message = _code_and_message(exc)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    label = f"{code}: " if code else (f"HTTP {status}: " if status else "")
    text = f"Azure: {doing}: {label}{scrub(message)}"
    cls: type[AdapterError]
    if isinstance(exc, ClientAuthenticationError) or code in _AUTH_CODES or status in (401, 403):
        cls = AzureAuthError
    elif code in _NOT_FOUND_CODES or status == 404:
        cls = AzureNotFoundError
    elif status == 429 or code in _RETRYABLE_CODES or (status or 0) >= 500:
        cls = AzureRetryableError
    else:  # QuotaExceeded, Conflict, OperationNotAllowed, a Failed long-running operation...
        cls = AzurePlatformError
    after = retry_after(headers.get("Retry-After")) if headers is not None else None
    out: AdapterError = cls(text, retry_after=after)
    out.code = code  # type: ignore[attr-defined]
    return out
