"""Azure Storage failures as layerbot adapter errors, keeping Azure's error code and message.

A SAS URL carries its signature in the query string (``sig=``): messages name the blob by its
URL without the query, and anything else that could echo a URL is scrubbed of ``sig=``.
azure-core is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from adapters.base import (
    AdapterError,
    AuthError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RetryableError,
    error_words,
)
from adapters.retry import retry_after

_SIGNATURE = re.compile(r"(?i)(sig=)[^&\s\"'<>]+")
#: statuses that say "later", not "never": throttling, busy, a server-side timeout
_TRANSIENT = (408, 429, 500, 502, 503, 504)


def redact(text: str) -> str:
    """``text`` with the value of every ``sig=`` parameter replaced."""
    return _SIGNATURE.sub(r"\1REDACTED", text)


def blob_name(sas_url: str) -> str:
    """The blob's URL without its query (the SAS), for messages."""
    parts = urlsplit(sas_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _azure_message(message: str) -> str:
    """Storage's message lines (RequestId, Time, details) on one line, the error code left
    out (the caller names it first)."""
    lines = [line.strip() for line in message.splitlines()]
    return redact("; ".join(line for line in lines if line and not line.startswith("ErrorCode:")))


def translate(exc: BaseException, doing: str) -> AdapterError:
    """Map an azure-core exception raised while ``doing`` something to an AdapterError."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, AdapterError):
        return exc
    prefix = f"Azure Storage: {doing} failed"
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        headers = exc.response.headers if exc.response is not None else {}
        # the header is Azure's own code; the SDK guesses one for a body-less answer (HEAD)
        code = headers.get("x-ms-error-code") or exc.error_code or exc.reason or "no error code"
        code = getattr(code, "value", code)
        text = f"{prefix}: HTTP {status} {code}: {_azure_message(exc.message or str(exc))}"
        if status in (401, 403):
            return AuthError(f"{text} (the disk's SAS is wrong, expired or revoked)")
        if status == 404:
            return NotFoundError(text)
        if status in _TRANSIENT:
            return RetryableError(text, retry_after=retry_after(headers.get("Retry-After")))
        return PlatformError(text)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | TimeoutError | ConnectionError):
        return PlatformTimeoutError(f"{prefix}: cannot reach the storage endpoint: "
                                    f"{redact(error_words(exc))}")
    return PlatformError(f"{prefix}: {redact(error_words(exc))}")
