"""Google API errors -> layerbot's adapter errors, keeping Google's reason and message.

Two sources: an HTTP error raised by a call (google.api_core's GoogleAPICallError, with the
status code and the ``error.errors[].reason`` of Compute's JSON error) and the ``error`` of
a finished long-running operation (``errors[].code``/``message``, ``httpErrorStatusCode``).
Neither ever carries a credential. google.api_core is imported inside the functions.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from adapters.base import (
    AdapterError,
    AuthError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RetryableError,
    error_words,
)

PLATFORM = "Google Cloud"
#: reasons of a 403 that mean "too fast", not "not allowed"
_RATE_LIMITED = {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
#: reasons of a 403 that mean "these credentials may not": the others (QUOTA_EXCEEDED, an
#: organisation policy, a disabled API...) are the platform's refusal, not an auth problem
AUTH_REASONS = frozenset({
    "forbidden", "insufficientPermissions", "PERMISSION_DENIED", "IAM_PERMISSION_DENIED",
    "accessDenied", "authError", "required", "unauthorized", "accountDisabled",
    "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "SERVICE_DISABLED_FOR_CREDENTIALS"})


def is_auth(status: int | None, reason: str) -> bool:
    """401, or a 403 whose reason is about permission (a 403 without one: Google's default)."""
    return status == 401 or (status == 403 and (not reason or reason in AUTH_REASONS))


class AlreadyExistsError(PlatformError):
    """409 alreadyExists: a resource of that name exists (made by someone else)."""


def _retry_after(response: Any) -> float | None:
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def by_status(status: int | None, reason: str, text: str,
              retry_after: float | None = None) -> AdapterError:
    """The adapter error for an HTTP ``status`` and Google ``reason``."""
    if reason in _RATE_LIMITED or status == 429:
        return RetryableError(text, retry_after=retry_after)
    if is_auth(status, reason):
        return AuthError(text)
    if status == 404:
        return NotFoundError(text)
    if status == 409 and reason in ("alreadyExists", "ALREADY_EXISTS", "RESOURCE_ALREADY_EXISTS"):
        return AlreadyExistsError(text)
    if status is not None and status >= 500:
        return RetryableError(text, retry_after=retry_after)
    return PlatformError(text)


def translate(exc: BaseException, doing: str) -> AdapterError:
    """``exc`` raised while ``doing`` something, as an AdapterError."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, AdapterError):
        return exc
    if isinstance(exc, gexc.GoogleAPICallError):
        first = exc.errors[0] if exc.errors and isinstance(exc.errors[0], dict) else {}
        reason = exc.reason or first.get("reason") or ""
        message = first.get("message") or exc.message
        status = exc.code if isinstance(exc.code, int) else None
        text = f"{PLATFORM}: {doing} failed: {status} {reason}: {message}".replace(" : ", ": ")
        return by_status(status, reason, text, _retry_after(exc.response))
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return AuthError(f"{PLATFORM}: {doing} failed: no credentials: set credentials_file_env "
                         "or provide application default credentials")
    if isinstance(exc, auth_exc.GoogleAuthError):  # its text may quote the token endpoint's answer
        return AuthError(f"{PLATFORM}: {doing} failed: the credentials were refused and could "
                         "not be renewed")
    if isinstance(exc, OSError):  # requests' errors too
        return PlatformTimeoutError(f"{PLATFORM}: {doing} failed: cannot reach the API: "
                                    f"{error_words(exc)}")
    return PlatformError(f"{PLATFORM}: {doing} failed: {error_words(exc)}")


def operation_error(operation: Any, doing: str) -> AdapterError:
    """The error of a DONE operation that failed (Operation.error.errors[])."""
    errors = list(operation.error.errors)
    parts = [f"{e.code}: {e.message}" if e.message else e.code for e in errors] or ["unknown error"]
    status = operation.http_error_status_code or None
    text = f"{PLATFORM}: {doing} failed: {'; '.join(parts)}"
    if operation.http_error_message and not errors:
        text += f" ({operation.http_error_message})"
    return by_status(status, errors[0].code if errors else "", text)
