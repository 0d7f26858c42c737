"""Google API errors -> layerbot's adapter errors, keeping Google's reason and message.

Google answers ``{"error": {"code": 429, "message": "...", "errors": [{"reason":
"rateLimitExceeded", ...}]}}``. A message never holds a resumable session URL (it authorises
the upload): callers pass it as ``secret`` and it is masked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adapters.base import AdapterError, AuthError, NotFoundError, PlatformError, RetryableError, error_words
from adapters.gcp.compute_faults import is_auth
from adapters.retry import retry_after

#: reasons that mean "later" whatever the status (Google sends some rate limits as 403)
_RETRY_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "backendError",
                            "internalError"})
MASK = "<upload session>"


def mask(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` nor its query string (the upload_id)."""
    if not secret:
        return text
    text = text.replace(secret, MASK)
    _, _, query = secret.partition("?")
    return text.replace(query, MASK) if query else text


def _error_body(body: bytes | str | Mapping[str, Any] | None) -> tuple[str, str]:
    """(reason, message) from a Google JSON error body; ("", text) for anything else."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    data: Any = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return "", body.strip()[:300]
    error = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(error, Mapping):
        return "", str(body)[:300]
    errors = error.get("errors") or [{}]
    first = errors[0] if isinstance(errors[0], Mapping) else {}
    return str(first.get("reason") or ""), str(error.get("message") or first.get("message") or "")


def from_status(status: int, body: bytes | str | Mapping[str, Any] | None,
                headers: Mapping[str, str], doing: str, secret: str | None = None) -> AdapterError:
    """The adapter error for an HTTP error answer to ``doing``."""
    reason, message = _error_body(body)
    detail = f"{message} ({reason})" if reason else message
    text = mask(f"Google Cloud: {doing} failed: HTTP {status}: {detail or 'no message'}", secret)
    wait = retry_after(headers.get("Retry-After"))
    if status == 429 or status >= 500 or reason in _RETRY_REASONS:
        return RetryableError(text, retry_after=wait)
    if is_auth(status, reason):
        return AuthError(text)
    if status == 404:
        return NotFoundError(text)
    return PlatformError(text)


def translate(exc: BaseException, doing: str, secret: str | None = None) -> AdapterError:
    """Map an exception of google-cloud-storage, google-auth or requests to an AdapterError."""
    if isinstance(exc, AdapterError):
        return exc
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from requests import exceptions as http

    if isinstance(exc, api.GoogleAPICallError):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        reason = (exc.errors[0].get("reason") if exc.errors and isinstance(exc.errors[0], Mapping)
                  else None) or exc.reason or ""
        body = {"error": {"message": exc.message, "errors": [{"reason": reason}]}}
        return from_status(int(exc.code or 0), body, headers, doing, secret)
    if isinstance(exc, auth.DefaultCredentialsError):
        return AuthError(f"Google Cloud: {doing} failed: no credentials: set credentials_file_env "
                         "or provide application default credentials")
    if isinstance(exc, auth.GoogleAuthError):  # its text may quote the token endpoint's answer
        return AuthError(f"Google Cloud: {doing} failed: the credentials were refused and could "
                         "not be renewed")
    if isinstance(exc, http.ConnectionError | http.Timeout):
        return RetryableError(mask(f"Google Cloud: {doing} failed: cannot reach the server: "
                                   f"{error_words(exc)}", secret))
    if isinstance(exc, http.ChunkedEncodingError | http.ContentDecodingError):
        # the answer was cut short (a dropped connection mid-body): a resumable upload asks what
        # GCS persisted before it sends again
        return RetryableError(mask(f"Google Cloud: {doing} failed: the answer was cut short: "
                                   f"{error_words(exc)}", secret))
    return PlatformError(mask(f"Google Cloud: {doing} failed: {error_words(exc)}", secret))
