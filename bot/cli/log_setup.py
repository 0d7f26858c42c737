"""The CLI's logging: one stderr handler, text or JSON lines, whose every record has its
secrets masked and names the task whose work wrote it (:mod:`bot.logcontext`).

At DEBUG, libraries log what they send: urllib3 logs each request line with its query string,
and a Cloud Storage resumable upload's session is a URL whose ``upload_id`` authorises writing
the object for a week (likewise an Azure SAS ``sig``). The formatters mask them in the whole
record, the message, an exception's traceback and stack included, whichever logger wrote it
(a filter on a logger misses records its children propagate; the handler sees them all).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO

from bot.logcontext import FIELDS, TaskFieldsFilter

LogFormat = Literal["text", "json"]
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMAT = "%(asctime)s %(levelname)s %(name)s%(task_fields)s: %(message)s"
MASK = "<secret>"
#: query parameters and headers whose value authorises a request
_SECRETS = re.compile(
    r"(?P<key>\b(?:upload_id|sig|X-Goog-Signature|X-Goog-Credential|access_token|refresh_token|"
    r"client_secret)=)[^&\s\"'<>]+"
    r"|(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE)


#: loggers of libraries that log every HTTP request and response, headers included, at INFO
#: (azure-core: a page-blob upload is thousands of Put Page requests): shown at DEBUG only
REQUEST_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy",)


def mask_secrets(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group("key") or m.group("bearer")) + MASK, text)


def _task_fields(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in FIELDS if (value := getattr(record, name, None)) is not None}


class SecretMaskingFormatter(logging.Formatter):
    """``... name [task=t1 template=win10 connector=lab]: message`` (the brackets when set)."""

    def format(self, record: logging.LogRecord) -> str:
        shown = {"task_id": "task"}
        task = " ".join(f"{shown.get(k, k)}={v}" for k, v in _task_fields(record).items())
        record.task_fields = f" [{task}]" if task else ""
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (ISO-8601, UTC), ``level``, ``logger``, ``message``,
    ``exc`` (the traceback) and ``stack`` when there are some, and the task fields when set.
    Each value is masked before it is encoded (masking the encoded line could eat an escape)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(_task_fields(record))
        return json.dumps({k: mask_secrets(v) if isinstance(v, str) else v for k, v in entry.items()},
                          ensure_ascii=False)


#: the last configure()'s level and format, for child processes (None: not configured)
_settings: tuple[int, LogFormat] | None = None


def settings() -> tuple[int, LogFormat] | None:
    """What a child process passes to configure() to log as this one does (its stderr is
    this process's)."""
    return _settings


def announce(text: str, *, err: bool = False) -> None:
    """A service's start or stop line. journald keeps stdout and stderr in one stream, so in a
    JSON log it is a record like any other (``journalctl -o cat | jq`` reads every line);
    in a text log it is the plain line people and scripts read today."""
    if _settings is not None and _settings[1] == "json":
        logging.getLogger("layerbot").info("%s", text)
        return
    stream = sys.stderr if err else sys.stdout
    print(text, file=stream, flush=True)


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  traceback: TracebackType | None) -> None:
    """A crash's traceback through the handler too: masked, and one JSON record in a JSON log
    (Python would print it to stderr as it is)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, traceback)
        return
    logging.getLogger("layerbot").critical("uncaught exception", exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread else "?"
    logging.getLogger("layerbot").critical("uncaught exception in thread %s", name,
                                           exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed (a second call replaces it)."""


def configure(level: int = logging.WARNING, log_format: LogFormat = "text",
              stream: TextIO | None = None) -> logging.Handler:
    """Log ``level`` and above to ``stream`` (stderr) as ``log_format``, masked, with the
    task fields; Python's warnings go the same way (a JSON log stays JSON lines)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(old)
    handler = _CliHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else SecretMaskingFormatter(FORMAT))
    handler.addFilter(TaskFieldsFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
    # Python's own hooks only: a host's (pytest's) keeps seeing what it watches for
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread
    global _settings
    _settings = (level, log_format)
    return handler
