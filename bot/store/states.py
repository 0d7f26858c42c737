"""Task states and the transitions allowed between them.

queued → compositing → uploading → action_required → done, or failed / cancelled.
A runner that resumes a task may re-enter an earlier working state (e.g. a task left
in ``uploading`` by a dead runner is composited again, from the cache).
"""

from __future__ import annotations

from enum import StrEnum

QUEUED = "queued"
COMPOSITING = "compositing"
UPLOADING = "uploading"
ACTION_REQUIRED = "action_required"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

ALL = (QUEUED, COMPOSITING, UPLOADING, ACTION_REQUIRED, DONE, FAILED, CANCELLED)
TERMINAL = frozenset({DONE, FAILED, CANCELLED})
ACTIVE = (QUEUED, COMPOSITING, UPLOADING, ACTION_REQUIRED)

_ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({COMPOSITING, FAILED, CANCELLED}),
    COMPOSITING: frozenset({COMPOSITING, UPLOADING, FAILED, CANCELLED}),
    UPLOADING: frozenset({COMPOSITING, UPLOADING, ACTION_REQUIRED, DONE, FAILED, CANCELLED}),
    ACTION_REQUIRED: frozenset({ACTION_REQUIRED, DONE, FAILED, CANCELLED}),
}

#: What Slack and the CLI call each status.
LABELS = {
    QUEUED: "Queued",
    COMPOSITING: "Running",
    UPLOADING: "Running",
    ACTION_REQUIRED: "Action required",
    DONE: "Done",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
}


class InvalidTransition(ValueError):
    pass


def check_transition(current: str, new: str) -> None:
    if new not in _ALLOWED.get(current, frozenset()):
        raise InvalidTransition(f"a {current} task cannot become {new}")


class EventKind(StrEnum):
    """What a task event records. Every writer uses these; the CLI, the Slack notifier and the
    task message read them. The store refuses any other kind."""

    CREATED = "created"
    STAGE = "stage"
    PROGRESS = "progress"
    CACHE_HIT = "cache_hit"
    COMPOSITED = "composited"
    CACHE_EVICTED = "cache_evicted"
    DISK_CREATED = "disk_created"
    NEXT_STEPS = "next_steps"
    HINT = "hint"
    WAITING = "waiting"
    GUEST = "guest"
    CANCEL_REQUESTED = "cancel_requested"
    RESUMED = "resumed"
    CLEANUP = "cleanup"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
