"""The CLI's logging: one stderr handler whose every line has its secrets masked.

With ``-v`` the root logger is at DEBUG, and libraries log what they send: urllib3 logs each
request line with its query string, and a Cloud Storage resumable upload's session is a URL
whose ``upload_id`` authorises writing the object for a week (likewise an Azure SAS ``sig``).
The formatter masks them in the whole line, the message, an exception's traceback and stack
included, whichever logger wrote it (a filter on a logger misses records its children
propagate; the handler sees them all).
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "<secret>"
#: query parameters and headers whose value authorises a request
_SECRETS = re.compile(
    r"(?P<key>\b(?:upload_id|sig|X-Goog-Signature|X-Goog-Credential|access_token|refresh_token|"
    r"client_secret)=)[^&\s\"'<>]+"
    r"|(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE)


def mask_secrets(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group("key") or m.group("bearer")) + MASK, text)


class SecretMaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed (a second call replaces it)."""


def configure(verbose: bool, stream: TextIO | None = None) -> logging.Handler:
    """Log WARNING and above (DEBUG with ``verbose``) to ``stream`` (stderr), masked."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(old)
    handler = _CliHandler(stream)
    handler.setFormatter(SecretMaskingFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    return handler
