"""What every store backend reads and writes: tasks, events, and the store's errors."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from adapters.steps import Detach
from bot.store import states


class TaskNotFound(KeyError):
    def __str__(self) -> str:
        return f"no task with id {self.args[0]!r}"


class LeaseLost(Detach):
    """Another runner owns the task now (or claimed it since this runner did: its fencing token
    is stale); this runner must stop touching it."""


class StoreError(RuntimeError):
    """The task database cannot be opened (bad location, unreachable server, missing driver)."""


class StoreUnavailable(StoreError):
    """The connection to the task database was lost during a call. Retryable: the store opens a
    new connection on its next call; whether a commit in flight happened is unknown."""


@dataclass(frozen=True)
class Task:
    id: str
    template: str
    connector: str
    platform: str
    status: str
    stage: str
    progress: float
    requested_by: str
    channel: str | None
    message_ts: str | None
    thread_ts: str | None
    idempotency_key: str | None
    link: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    image_name: str
    lease_owner: str | None
    lease_until: float
    cancel_requested: int
    attempts: int
    #: JSON of adapters.resources (a list); a dict in rows written before resources were typed
    resources: list[Any] | dict[str, Any]
    published: dict[str, Any] | None
    #: the fencing token: bumped by every claim; a runner's writes carry the one it claimed with
    lease_generation: int = 0
    #: the runner tags of the task's connector when it was queued: only a runner having all
    #: of them claims it (none: any runner)
    runner_tags: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in states.TERMINAL

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        data = dict(row)
        data["resources"] = json.loads(data["resources"] or "[]")
        data["published"] = json.loads(data["published"]) if data["published"] else None
        data["runner_tags"] = json.loads(data.get("runner_tags") or "[]")
        return cls(**data)


@dataclass(frozen=True)
class Event:
    id: int
    task_id: str
    at: float
    #: a plain string for a kind this layerbot does not know (written by a newer one)
    kind: states.EventKind | str
    message: str
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Event:
        return cls(**{**row, "kind": read_kind(row["kind"]), "data": json.loads(row["data"] or "{}")})


def read_kind(kind: str) -> states.EventKind | str:
    """Writes are strict, reads are not: a newer layerbot sharing the database may write a
    kind this one does not know, and its readers (CLI, notifier) must keep going."""
    try:
        return states.EventKind(kind)
    except ValueError:
        return kind


def new_task_id() -> str:
    return "t" + secrets.token_hex(4)
