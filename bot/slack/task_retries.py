"""Which task a Retry made, and the other way round, with links to their messages.

A retry is a new task whose idempotency key names the failed one (one per failed task, however
often Retry is clicked), so both directions are a lookup, whichever process made the retry.
Two forms: ``retry:<id>`` for a retry queued on the click, ``retry-<id>:<template>`` for one a
second person approved (its intent's id is ``retry-<id>``; an approved task's key is
``<intent id>:<template>``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store.interface import Store
from bot.store.model import Task, TaskNotFound

log = logging.getLogger(__name__)

_PREFIX = "retry:"
_APPROVED_PREFIX = "retry-"


def retry_key(task_id: str) -> str:
    """The idempotency key of the retry of ``task_id``, queued on the click."""
    return _PREFIX + task_id


def retry_intent_id(task_id: str) -> str:
    """The id of the approval intent of a retry of ``task_id`` on a protected target."""
    return _APPROVED_PREFIX + task_id


def _retry_keys(task: Task) -> list[str]:
    """Every idempotency key a retry of ``task`` may have."""
    return [retry_key(task.id), f"{retry_intent_id(task.id)}:{task.template}"]


def retried_from(task: Task) -> str | None:
    """The id of the task ``task`` retries, if it is a retry (either form)."""
    key = task.idempotency_key or ""
    if key.startswith(_PREFIX):
        return key.removeprefix(_PREFIX) or None
    if key.startswith(_APPROVED_PREFIX):
        return key.removeprefix(_APPROVED_PREFIX).partition(":")[0] or None
    return None


def find_retry(store: Store, task: Task) -> Task | None:
    """The retry of ``task``, if Retry was clicked (blocking: a store call)."""
    rows = store.rows("SELECT id FROM tasks WHERE idempotency_key IN (?, ?) ORDER BY created_at",
                      _retry_keys(task))
    return store.get(rows[0]["id"]) if rows else None


def find_original(store: Store, task: Task) -> Task | None:
    """The task ``task`` retries (blocking: a store call)."""
    old = retried_from(task)
    if old is None:
        return None
    try:
        return store.get(old)
    except TaskNotFound:
        return None


@dataclass(frozen=True)
class TaskLink:
    task_id: str
    #: the permalink of its message (None: not posted yet, or Slack would not say)
    url: str | None


class Permalinks:
    """chat.getPermalink, asked once per message."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._known: dict[tuple[str, str], str] = {}

    async def of(self, task: Task | None) -> TaskLink | None:
        if task is None:
            return None
        if not (task.channel and task.message_ts):
            return TaskLink(task.id, None)
        key = (task.channel, task.message_ts)
        if key not in self._known:
            try:
                resp = await self.client.chat_getPermalink(channel=task.channel,
                                                           message_ts=task.message_ts)
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("task %s: no permalink for its message (%s)", task.id, type(exc).__name__)
                return TaskLink(task.id, None)
            self._known[key] = str(resp["permalink"])
        return TaskLink(task.id, self._known[key])
