"""Prism's HTTP answers and task failures as adapter errors, keeping Prism's reason and
message (``message_list``); never a credential."""

from __future__ import annotations

from typing import Any

from adapters.base import (
    AdapterError,
    AuthError,
    NotFoundError,
    PlatformError,
    RefusedError,
    RetryableError,
)
from adapters.retry import REFUSED_STATUSES, TRANSIENT_STATUSES, retry_after

PLATFORM = "Nutanix Prism"


class SpecVersionConflict(PlatformError):
    """409: the entity changed since its spec was read (a stale ``metadata.spec_version``)."""


class TaskFailed(PlatformError):
    """A Prism task ended FAILED or ABORTED; the message holds its ``error_detail``."""


def prism_messages(body: Any) -> str:
    """``REASON: message; ...`` from a Prism error body (its ``message_list``), else its text."""
    if isinstance(body, dict):
        listed = body.get("message_list") or []
        parts = [f"{m.get('reason', '')}: {m.get('message', '')}".strip(": ")
                 for m in listed if isinstance(m, dict)]
        if parts:
            return "; ".join(parts)
        if isinstance(body.get("message"), str):
            return str(body["message"])
        return ""
    return str(body or "").strip()[:500]


def from_status(status: int, body: Any, doing: str, retry_after_header: str | None = None
                ) -> AdapterError:
    said = prism_messages(body)
    text = f"{PLATFORM}: {doing}: HTTP {status}" + (f" {said}" if said else "")
    if status == 401:
        return AuthError(f"{text} (the user and password named by user_env/password_env were "
                         "refused)" if not said else text)
    if status == 403:
        return AuthError(text)
    if status == 404:
        return NotFoundError(text)
    if status == 409:
        return SpecVersionConflict(text)
    if status in REFUSED_STATUSES:
        return RefusedError(text, retry_after=retry_after(retry_after_header))
    if status in TRANSIENT_STATUSES:
        return RetryableError(text, retry_after=retry_after(retry_after_header))
    return PlatformError(text)


def task_failed(task: dict[str, Any], doing: str) -> TaskFailed:
    detail = task.get("error_detail") or prism_messages(task) or "no error detail"
    return TaskFailed(f"{PLATFORM}: {doing}: task {task.get('uuid', '?')} {task.get('status')}: "
                      f"{detail}")
