"""Tells Slack what the tasks do: follows the store's events (the same ones the CLI
prints) and keeps one task message per task current, with thread replies.

- ``created``: post the task message (in the task's channel; if the bot cannot post
  there, in a DM to the requester) and save its ``ts`` on the task, so a restarted
  ``serve`` edits the same message and continues the same thread.
- disk created with the next step and the local-user hint (one reply), waiting (*Action
  required*, broadcast to the channel), and the final Done / Failed (broadcast) / Cancelled:
  thread replies.
- Any event marks the task message dirty; it is edited with ``chat.update`` at most
  once per ``update_interval`` seconds per task, later if Slack answers 429, and at most
  one edit per ``update_spacing`` seconds over all tasks (chat.update is Tier 3, ~50/min).
- The id of the last event handled is kept in the database (``slack_cursor``), saved
  after every post and every few seconds otherwise.

Writes go through :class:`bot.slack.records.SlackDB` (its own thread), so a commit waiting
for the disk never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks as slack_blocks
from bot.slack.records import SlackDB
from bot.slack.task_retries import Permalinks, find_original, find_retry, retried_from
from bot.slack.task_view import task_view
from bot.store import states
from bot.store.events import follow
from bot.store.interface import Store
from bot.store.model import Event, Task, TaskNotFound
from bot.store.states import EventKind

log = logging.getLogger(__name__)

CURSOR = "notifier"
#: Seconds between cursor saves when only the task messages changed.
CURSOR_EVERY = 5.0
#: Sent to the channel too: the moments someone must act. Done is only on the task message.
BROADCAST = frozenset({EventKind.WAITING, EventKind.FAILED})
#: Errors after which posting to the task's channel is hopeless: DM the requester.
CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived",
                            "restricted_action", "cannot_dm_bot"})
#: Errors after which a message can no longer be edited.
GONE_ERRORS = frozenset({"message_not_found", "channel_not_found", "cant_update_message",
                         "is_archived", "msg_too_long", "invalid_blocks"})


def retry_after(exc: SlackApiError, default: float = 1.0) -> float:
    value = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else default
    except (TypeError, ValueError):
        return default


class SlackNotifier:
    def __init__(self, store: Store, db: SlackDB, client: AsyncWebClient, *,
                 update_interval: float = 3.0, update_spacing: float = 1.2,
                 poll_interval: float = 0.2, max_attempts: int = 5) -> None:
        """``store`` is the loop's connection (reads, following events); writes go
        through ``db`` (its own thread)."""
        self.store = store
        self.db = db
        self.client = client
        self.update_interval = update_interval
        self.update_spacing = update_spacing
        self._last_edit = 0.0
        self._blocked_until = 0.0
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self._dirty: set[str] = set()
        self._next_update: dict[str, float] = {}
        self._last_sent: dict[str, dict[str, Any]] = {}
        self._cancellers: dict[str, str | None] = {}
        self._approvers: dict[str, str | None] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.permalinks = Permalinks(client)

    # ------------------------------------------------------------ cursor
    def cursor(self) -> int:
        """The last event id handled (runs on the database thread)."""
        store = self.db.store
        rows = store.rows("SELECT event_id FROM slack_cursor WHERE name = ?", [CURSOR])
        if rows:
            return int(rows[0]["event_id"])
        start = store.last_event_id()  # a fresh bot does not replay history
        self._save_cursor(start)
        return start

    def _save_cursor(self, event_id: int) -> None:
        store = self.db.store
        with store.transaction():
            store.execute(
                "INSERT INTO slack_cursor (name, event_id) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET event_id = excluded.event_id",
                [CURSOR, event_id],
            )

    # ------------------------------------------------------------ main loop
    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        after = await self.db.run(self.cursor)
        for task in await self.db.run(self.db.store.list_tasks, limit=200):
            if task.message_ts and not task.finished:
                self._dirty.add(task.id)  # refresh what a previous process left
        updater = asyncio.create_task(self._updates(stop), name="slack-updates")
        saved, saved_at = after, time.monotonic()
        try:
            async for event in follow(self.store, after=after, stop=stop,
                                      poll_interval=self.poll_interval):
                after = event.id
                try:
                    posted = await self.handle(event)
                except Exception:
                    log.exception("slack notifier: event %s (%s) not delivered", event.id,
                                  event.kind)
                    posted = True
                # A message must not be posted twice, so the cursor is saved after every
                # post; events that only change the task message are cheap to replay.
                if posted or time.monotonic() - saved_at > CURSOR_EVERY:
                    await self.db.run(self._save_cursor, after)
                    saved, saved_at = after, time.monotonic()
        finally:
            updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updater
            if after != saved:
                await self.db.run(self._save_cursor, after)
            await self._flush()

    async def _flush(self, timeout: float = 5.0) -> None:
        """On the way out: one last edit of every dirty task message, throttle or not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for task_id in list(self._dirty):
                    self._dirty.discard(task_id)
                    await self._update(task_id)

    async def handle(self, event: Event) -> bool:
        """Tell Slack about one event; True if a message was posted."""
        try:
            task = await self.db.run(self.db.store.get, event.task_id)
        except TaskNotFound:
            return False
        if task.channel is None:  # not a Slack task (CLI); the CLI prints these events
            return False
        posted = False
        if task.message_ts is None:
            task = await self._post_task_message(task)
            posted = True
            if (old := retried_from(task)) and task.message_ts:
                self.mark_dirty(old)  # its message links to this one now
            if event.kind == EventKind.CREATED or task.message_ts is None:
                return posted
        reply = slack_blocks.thread_reply(task, event, cancelled_by=await self._cancelled_by(task))
        if reply is not None:
            await self._call("chat_postMessage", channel=task.channel, thread_ts=task.thread_ts,
                             reply_broadcast=event.kind in BROADCAST, unfurl_links=False,
                             **reply.payload())
            posted = True
        self.mark_dirty(task.id)
        return posted

    async def _cancelled_by(self, task: Task) -> str | None:
        """Who asked for the task's cancel (its ``cancel_requested`` event), remembered."""
        if not task.cancel_requested:
            return None
        if task.id not in self._cancellers:
            events = await self.db.run(self.db.store.events, task.id)
            self._cancellers[task.id] = next(
                (str(e.data["by"]) for e in reversed(events)
                 if e.kind == EventKind.CANCEL_REQUESTED and e.data.get("by")), None)
        return self._cancellers[task.id]

    async def _approved_by(self, task: Task) -> str | None:
        """The second person whose click started the task: the task's idempotency key is
        ``<intent id>:<template>`` (see handlers), and a protected target's intent records
        its approver. Remembered."""
        if task.id not in self._approvers:
            intent_id = (task.idempotency_key or "").rpartition(":")[0]
            intent = await self.db.run(self.db.intents.get, intent_id) if intent_id else None
            self._approvers[task.id] = (
                intent.claimed_by if intent is not None and intent.rule == "second_person"
                and intent.claimed_by and not intent.cancelled else None)
        return self._approvers[task.id]

    def mark_dirty(self, task_id: str) -> None:
        self._dirty.add(task_id)
        self._wake.set()

    async def _task_message(self, task: Task) -> slack_blocks.Message:
        events = await self.db.run(self.db.store.events, task.id)
        retry_of = retried_as = None
        if retried_from(task):
            retry_of = await self.permalinks.of(await self.db.run(find_original, self.db.store, task))
        if task.status in (states.FAILED, states.CANCELLED):
            retried_as = await self.permalinks.of(await self.db.run(find_retry, self.db.store, task))
        return slack_blocks.task_message(task, task_view(task, events), retry_of=retry_of,
                                         retried_as=retried_as,
                                         cancelled_by=await self._cancelled_by(task),
                                         approved_by=await self._approved_by(task))

    async def _post_task_message(self, task: Task) -> Task:
        message = await self._task_message(task)
        assert task.channel is not None
        try:
            resp = await self._call("chat_postMessage", channel=task.channel, **message.payload(),
                                    raise_on=CHANNEL_ERRORS)
        except SlackApiError as exc:
            log.warning("cannot post in %s (%s); messaging %s directly", task.channel,
                        exc.response.get("error"), task.requested_by)
            resp = await self._call("chat_postMessage", channel=task.requested_by,
                                    **message.payload())
        if resp is None:
            return task
        self._next_update[task.id] = time.monotonic() + self.update_interval
        self._last_sent[task.id] = message.payload()
        return await self.db.run(self.db.store.update, task.id, None, channel=resp["channel"],
                                 message_ts=resp["ts"], thread_ts=resp["ts"])

    # ------------------------------------------------------------ throttled edits
    async def _updates(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            due = sorted((t for t in self._dirty if self._next_update.get(t, 0.0) <= now),
                         key=lambda t: self._next_update.get(t, 0.0))
            for task_id in due:
                gap = max(self._last_edit + self.update_spacing,
                          self._blocked_until) - time.monotonic()
                if gap > 0 and await self._stopping(gap):
                    return
                self._dirty.discard(task_id)
                try:
                    if await self._update(task_id):
                        self._last_edit = time.monotonic()
                except Exception:
                    log.exception("task %s: its message was not updated; trying again", task_id)
                    self._next_update[task_id] = time.monotonic() + self.update_interval
                    self._dirty.add(task_id)
            waits = [self._next_update.get(t, 0.0) - time.monotonic() for t in self._dirty]
            timeout = max(0.01, min(waits)) if waits else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _update(self, task_id: str) -> bool:
        """Edit the task message if it changed; True if chat.update was called."""
        try:
            task = await self.db.run(self.db.store.get, task_id)
        except TaskNotFound:
            return False
        if not (task.channel and task.message_ts):
            return False
        payload = (await self._task_message(task)).payload()
        if self._last_sent.get(task_id) == payload:
            return False
        self._next_update[task_id] = time.monotonic() + self.update_interval
        try:
            await self.client.chat_update(channel=task.channel, ts=task.message_ts, **payload)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if exc.response.status_code == 429:
                wait = retry_after(exc)
                log.info("chat.update rate limited; retrying task %s in %.1f s", task_id, wait)
                self._next_update[task_id] = time.monotonic() + max(wait, self.update_interval)
                self._blocked_until = time.monotonic() + wait  # the limit is per method
                self._dirty.add(task_id)
            elif error in GONE_ERRORS:
                log.warning("task %s: its message can no longer be edited (%s)", task_id, error)
                self._last_sent[task_id] = payload
            else:
                log.warning("task %s: chat.update failed (%s); will try again", task_id, error)
                self._dirty.add(task_id)
            return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("task %s: chat.update failed (%s); will try again", task_id,
                        type(exc).__name__)
            self._dirty.add(task_id)
            return True
        self._last_sent[task_id] = payload
        return True

    # ------------------------------------------------------------ calls with retries
    async def _call(self, method: str, *, raise_on: frozenset[str] = frozenset(),
                    **kwargs: Any) -> Any:
        """Call a Web API method, waiting out 429s (Retry-After) and transient failures;
        returns None (logged) when it cannot be delivered."""
        delay = 1.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await getattr(self.client, method)(**kwargs)
            except SlackApiError as exc:
                error = exc.response.get("error")
                if error in raise_on:
                    raise
                if exc.response.status_code == 429:
                    if await self._stopping(retry_after(exc)):
                        break
                    continue
                if exc.response.status_code < 500:
                    log.warning("%s failed: %s", method, error)
                    return None
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("%s failed (%s), attempt %d", method, type(exc).__name__, attempt)
            if await self._stopping(delay):
                break
            delay = min(delay * 2, 30.0)
        log.error("%s: giving up (%d attempts)", method, attempt)
        return None

    async def _stopping(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; True if the app is shutting down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()
