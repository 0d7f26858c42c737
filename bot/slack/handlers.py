"""What the Slack app does for each command and click. Every handler runs after the
request was acknowledged (see :mod:`bot.slack.app`), so it may call the Web API,
resolve user groups and plan templates (in the planner's process: :mod:`bot.runner.planner`).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.catalog import Catalog
from bot.runner.planner import Planner
from bot.runner.planning import PlanError, PublishPlan, enqueue, new_image_name
from bot.slack import access as slack_access
from bot.slack import blocks as slack_blocks
from bot.slack import payloads as slack_payloads
from bot.slack.access import Decision, GroupDirectory
from bot.slack.blocks import Message
from bot.slack.intents import Claim, Intent
from bot.slack.people import UserDirectory
from bot.slack.records import SlackDB
from bot.slack.response_urls import Respond, Turns
from bot.slack.task_retries import Permalinks, find_retry, retry_intent_id, retry_key
from bot.slack.task_view import task_views
from bot.store import states
from bot.store.task_store import Task, TaskNotFound

log = logging.getLogger(__name__)

#: How long a confirmed card waits for the notifier to post its task messages (to link them).
PERMALINK_WAIT = 60.0
PERMALINK_POLL = 0.25

#: Sends a message to the user who acted (ephemeral where possible).
Reply = Callable[[Message], Awaitable[None]]


class Background:
    """Owns the work started after an ack, so it is not garbage collected mid-way and
    can be awaited on shutdown (and by tests). Each piece of work starts in a loop turn of its
    own (``turns``): a burst's hundred handlers, started together, would run their first steps
    in one turn while the next requests of the burst wait for their acks."""

    def __init__(self, turns: Turns | None = None) -> None:
        self.turns = turns
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        # a task cancelled before it awaited ``coro`` would leave it never awaited (a warning)
        task.add_done_callback(lambda _: coro.close())

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            if self.turns is not None:
                await self.turns.run(lambda: None)
            await coro
        except Exception:
            log.exception("slack: %s failed", name)

    async def drain(self, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # awaited: their cleanup (an answer in a finally) runs before the caller closes
            # what they use; bounded, as a task may hold off its cancellation
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)


def _field(value: object, key: str) -> object:
    """``value[key]`` if ``value`` is an object, else None: the payload models admit these
    fields, yet a handler reads them without trusting that it ran behind them."""
    return value.get(key) if isinstance(value, dict) else None


def clicked_channel(body: dict[str, Any]) -> str | None:
    """The channel a button was clicked in (``channel.id`` of a block_actions payload)."""
    channel = _field(body.get("channel"), "id")
    return channel if isinstance(channel, str) and channel else None


def selected_templates(view: dict[str, Any]) -> list[str]:
    """The template names chosen in the publish modal (its multi-select's options)."""
    values = _field(view.get("state"), "values")
    state = _field(_field(values, slack_blocks.BLOCK_TEMPLATES), slack_blocks.ACTION_TEMPLATES)
    options = _field(state, "selected_options")
    if not isinstance(options, list):
        return []
    return [name for o in options if isinstance(name := _field(o, "value"), str)]


def ephemeral(respond: Respond) -> Reply:
    async def reply(message: Message) -> None:
        await respond(message, response_type="ephemeral", replace_original=False)
    return reply


class Handlers:
    def __init__(self, *, db: SlackDB, catalog: Catalog, client: AsyncWebClient,
                 groups: GroupDirectory, planner: Planner, turns: Turns,
                 wake_runner: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.turns = turns
        self.planner = planner
        self.store = db.store  # touched only through db.run (its own thread)
        self.intents = db.intents
        self.catalog = catalog
        self.client = client
        self.groups = groups
        self.users = UserDirectory(client)
        self.wake_runner = wake_runner
        #: the workspace's address (auth.test's ``url``), for links to task messages
        self.workspace_url: str | None = None

    # ------------------------------------------------------------ helpers
    async def _groups(self, user: str) -> set[str]:
        return await self.groups.groups_of(user, slack_access.groups_in_use(self.catalog))

    async def _decide(self, user: str, action: str, target: str, decision: Decision) -> Decision:
        await self.db.run(slack_access.record, self.store, user, action, target, decision)
        return decision

    async def _refuse(self, user: str, action: str, target: str, reason: str,
                      reply: Reply | None, text: str) -> None:
        """Audit a refusal that is not an access decision (an unknown, used or expired id),
        then tell the user."""
        await self._decide(user, action, target[:200], Decision(False, reason))
        if reply is not None:
            await reply(slack_blocks.text_message(text))

    async def refuse_request(self, body: dict[str, Any], reason: str) -> None:
        """A signed request the app cannot answer (as :class:`bot.slack.edge.SlackGate`)."""
        log.warning("slack: refused a signed request: %s", reason)
        await self._decide(slack_payloads.actor(body), "request", "slack", Decision(False, reason))

    def _may_see(self, task: Task, user: str, groups: set[str]) -> bool:
        """A task is shown to its requester and to whoever may publish its template."""
        return user == task.requested_by or slack_access.may_publish(
            self.catalog, task.template, user=user, groups=groups, channel=None,
            check_channel=False).allowed

    async def _visible_tasks(self, user: str, limit: int) -> list[Task]:
        groups = await self._groups(user)
        templates = [n for n in self.catalog.templates if slack_access.may_publish(
            self.catalog, n, user=user, groups=groups, channel=None, check_channel=False).allowed]
        return await self.db.run(self.store.tasks_visible_to, user, templates, limit)

    async def _allowed_templates(self, user: str, channel: str | None) -> list[str]:
        groups = await self._groups(user)
        return [n for n in self.catalog.templates
                if slack_access.may_publish(self.catalog, n, user=user, groups=groups,
                                            channel=channel).allowed]

    def _dm(self, user: str, channel: str | None) -> Reply:
        """Ephemeral in ``channel`` if possible, else a direct message."""
        async def reply(message: Message) -> None:
            payload = await self.turns.run(message.payload)
            if channel:
                try:
                    await self.client.chat_postEphemeral(channel=channel, user=user, **payload)
                    return
                except SlackApiError as exc:
                    log.info("postEphemeral in %s failed (%s); sending a DM", channel,
                             exc.response.get("error"))
            await self.client.chat_postMessage(channel=user, **payload)
        return reply

    def _template_named(self, word: str) -> str | None:
        """The catalog's spelling of template ``word``, matched case-insensitively."""
        if word in self.catalog.templates:
            return word
        return {n.lower(): n for n in self.catalog.templates}.get(word.lower())

    def _closest_template(self, word: str, among: list[str]) -> str | None:
        by_lower = {n.lower(): n for n in among}
        guess = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
        return by_lower[guess[0]] if guess else None

    async def _plans(self, names: list[str], *, check_cache: bool) -> list[PublishPlan]:
        return await self.planner.plans(names, check_cache=check_cache)

    # ------------------------------------------------------------ /publish
    async def command(self, body: dict[str, Any], respond: Respond) -> None:
        user, channel = body["user_id"], body.get("channel_id")
        words = (body.get("text") or "").split()
        reply = ephemeral(respond)
        verb = words[0].lower() if words else ""
        if not words:
            await self.open_modal(user, channel, body["trigger_id"])
        elif verb == "help":
            await reply(slack_blocks.text_message(messages.SLACK_HELP))
        elif verb == "list":
            await self.list_templates(user, channel, reply)
        elif verb == "status":
            await self.status(user, words[1] if len(words) > 1 else None, reply)
        else:
            await self.request(user, channel, list(dict.fromkeys(words)), reply)

    async def list_templates(self, user: str, channel: str | None, reply: Reply) -> None:
        allowed = set(await self._allowed_templates(user, channel))
        rows = [(n, t.icon, t.description, n in allowed) for n, t in self.catalog.templates.items()]
        await reply(slack_blocks.list_message(rows))

    async def _tasks_view(self, user: str, mine: bool, limit: int) -> list[Task]:
        if mine:
            return await self.db.run(self.store.tasks_visible_to, user, [], limit)
        return await self._visible_tasks(user, limit)

    async def _template_tasks(self, user: str, template: str, limit: int) -> list[Task]:
        """The latest tasks of ``template`` this user may see: all if they may publish it."""
        if self._may_see_template(template, user, await self._groups(user)):
            return await self.db.run(self.store.tasks_visible_to, "", [template], limit)
        own = await self.db.run(self.store.tasks_visible_to, user, [], 200)
        return [t for t in own if t.template == template][:limit]

    def _may_see_template(self, template: str, user: str, groups: set[str]) -> bool:
        return slack_access.may_publish(self.catalog, template, user=user, groups=groups,
                                        channel=None, check_channel=False).allowed

    async def status(self, user: str, task_id: str | None, reply: Reply) -> None:
        """``status``, ``status mine|all``, ``status TEMPLATE`` (any case) or ``status TASK``."""
        word = (task_id or messages.STATUS_ALL).lower()
        if word in (messages.STATUS_MINE, messages.STATUS_ALL):
            mine = word == messages.STATUS_MINE
            tasks = await self._tasks_view(user, mine, 10)
            await reply(slack_blocks.status_message(
                tasks, messages.status_heading(mine), self.workspace_url, mine=mine,
                views=await self.db.run(task_views, self.store, tasks)))
            return
        assert task_id is not None
        template = self._template_named(task_id)
        if template is not None:
            mine = not self._may_see_template(template, user, await self._groups(user))
            tasks = await self._template_tasks(user, template, 10)
            await reply(slack_blocks.status_message(
                tasks, messages.status_heading(mine, slack_blocks.escape(template)),
                self.workspace_url, views=await self.db.run(task_views, self.store, tasks)))
            return
        try:
            task = await self.db.run(self.store.get, task_id)
        except TaskNotFound:
            allowed = await self._allowed_templates(user, None)
            guess = self._closest_template(task_id, allowed)
            await self._refuse(user, "status", task_id, "no such task", reply,
                               messages.unknown_status_word(slack_blocks.escape(task_id), guess))
            return
        no_task = messages.no_task(slack_blocks.escape(task_id))
        if not self._may_see(task, user, await self._groups(user)):
            # the same answer as for an unknown id: the task's existence is not told either
            await self._refuse(user, "status", task_id, messages.reason_user("template", task.template),
                               reply, no_task)
            return
        events = await self.db.run(self.store.events, task.id)
        names = await self.users.names([task.requested_by, *(
            str(e.data["by"]) for e in events if isinstance(e.data.get("by"), str))])
        await reply(slack_blocks.task_detail(task, events, names=names))

    async def open_modal(self, user: str, channel: str | None, trigger_id: str) -> None:
        names = await self._allowed_templates(user, channel)
        approval = frozenset(n for n in names
                             if slack_access.approval_rule(self.catalog, [n]) == "second_person")
        view = slack_blocks.publish_modal(
            [(n, self.catalog.templates[n].description) for n in names], channel, approval)
        if not names:
            await self._dm(user, channel)(slack_blocks.text_message(messages.NO_TEMPLATES))
            return
        await self.client.views_open(trigger_id=trigger_id, view=view)

    async def modal_submitted(self, body: dict[str, Any]) -> None:
        user = body["user"]["id"]
        view = body["view"]
        channel = view.get("private_metadata") or None
        names = selected_templates(view)
        view_id = view.get("id")
        reply = self._modal(view_id, user, channel) if isinstance(view_id, str) else self._dm(user, channel)
        await self.request(user, channel, names, reply)

    def _modal(self, view_id: str, user: str, channel: str | None) -> Reply:
        """Shows a message as the modal's next view (the confirm step for a confirm card);
        a modal closed meanwhile gets it as an ephemeral or direct message instead."""
        async def reply(message: Message) -> None:
            view = await self.turns.run(lambda: slack_blocks.modal_step(message, channel))
            try:
                await self.client.views_update(view_id=view_id, view=view)
            except SlackApiError as exc:
                log.info("views.update of %s failed (%s); sending a message", view_id,
                         exc.response.get("error"))
                await self._dm(user, channel)(message)
        return reply

    async def modal_confirmed(self, body: dict[str, Any]) -> None:
        """The modal's confirm step was submitted: the same checks and start as the card's
        Publish button, answered in the modal."""
        user = body["user"]["id"]
        view = body["view"]
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            meta = None
        intent_id = _field(meta, "intent")
        channel = _field(meta, "channel")
        channel = channel if isinstance(channel, str) and channel else None
        reply = self._modal(str(view.get("id") or ""), user, channel)

        async def respond(message: Message, **_: Any) -> None:
            await reply(message)

        click: dict[str, Any] = {"user": {"id": user},
                                 "actions": [{"value": intent_id if isinstance(intent_id, str) else ""}]}
        if channel:
            click["channel"] = {"id": channel}
        await self.confirm(click, respond)

    async def request(self, user: str, channel: str | None, names: list[str],
                      reply: Reply, *, intent_id: str | None = None) -> None:
        """Check names and access, then offer the confirm card. ``intent_id``: a fixed id (a
        retry), so a second request while its card is live posts no second card. Names match
        templates case-insensitively."""
        names = list(dict.fromkeys(self._template_named(n) or n for n in names))
        unknown = [n for n in names if n not in self.catalog.templates]
        if unknown:
            # suggest only what this user may publish here: a guess must not reveal the rest
            templates = await self._allowed_templates(user, channel)
            problems = [slack_blocks.escape(messages.unknown_template(
                n, self._closest_template(n, templates))) for n in unknown]
            await reply(slack_blocks.text_message(messages.unknown_templates(problems)))
            return
        if len(names) > slack_blocks.MAX_CARD_TEMPLATES:
            await reply(slack_blocks.text_message(messages.too_many(slack_blocks.MAX_CARD_TEMPLATES)))
            return
        groups = await self._groups(user)
        for name in names:
            decision = await self._decide(user, "publish", name, slack_access.may_publish(
                self.catalog, name, user=user, groups=groups, channel=channel))
            if not decision.allowed:
                await reply(slack_blocks.text_message(
                    messages.denied("publish", name, decision.reason)))
                return
        rule = slack_access.approval_rule(self.catalog, names)
        if rule == "second_person" and not channel:
            await reply(slack_blocks.text_message(messages.approval_needs_channel()))
            return
        try:
            plans = await self._plans(names, check_cache=True)
        except Exception as exc:
            reference = None
            if isinstance(exc, PlanError) and exc.explained:
                log.info("planning %s failed: %s", names, exc)
            else:
                reference = secrets.token_hex(3)
                log.error("planning %s failed, reference %s", names, reference, exc_info=exc)
            await reply(slack_blocks.text_message(messages.slack_error(
                messages.cannot_prepare(names, exc, reference=reference))))
            return
        intent, new = await self.db.run(self.intents.create, user, channel, names, rule,
                                        intent_id=intent_id)
        if not new:
            await reply(slack_blocks.text_message(
                messages.intent_used(intent.claimed_by) if intent.claimed_by
                else messages.approval_pending(intent.user, intent.templates)))
            return
        if rule == "requester":
            await reply(await self.turns.run(lambda: slack_blocks.confirm_card(
                plans, intent.id, user, second_person=False,
                ttl_minutes=int(self.intents.ttl // 60))))
            return
        card = await self.turns.run(lambda: slack_blocks.approval_card(
            plans, intent.id, user, approvers=slack_access.approvers(self.catalog, names, user),
            expires_at=intent.expires_at))
        # an approver must see the card: post it in the channel, not ephemerally
        assert channel is not None
        try:
            posted = await self.client.chat_postMessage(channel=channel, **card.payload())
            await self.db.run(self.intents.set_card, intent.id, posted["channel"], posted["ts"])
        except SlackApiError as exc:
            log.warning("cannot post the approval card in %s: %s", channel,
                        exc.response.get("error"))
            await reply(slack_blocks.text_message(messages.slack_error(
                "Cannot post the confirmation in this channel")))
            return
        await reply(slack_blocks.text_message(messages.approval_requested(user, names)))

    # ------------------------------------------------------------ the card's buttons
    async def confirm(self, body: dict[str, Any], respond: Respond) -> None:
        clicker = body["user"]["id"]
        intent_id = body["actions"][0].get("value") or ""
        reply = ephemeral(respond)
        intent = await self.db.run(self.intents.get, intent_id) if intent_id else None
        if intent is not None and intent.expired:
            await self._refuse(clicker, "confirm", ",".join(intent.templates), "expired", reply,
                               messages.intent_expired(int(self.intents.ttl // 60)))
            return
        if intent is None or intent.cancelled:
            await self._refuse(clicker, "confirm", intent_id or "", "unknown or withdrawn confirmation",
                               reply, messages.intent_unknown())
            return
        target = ",".join(intent.templates)
        if intent.claimed_by is not None:
            await self._refuse(clicker, "confirm", target, f"already used by {intent.claimed_by}",
                               reply, messages.intent_used(intent.claimed_by))
            return
        if intent.expires_at <= time.time():
            await self._decide(clicker, "confirm", target, Decision(False, "expired"))
            await respond(slack_blocks.text_message(messages.intent_expired(
                int(self.intents.ttl // 60))), replace_original=True)
            return
        decision = await self._may_confirm(intent, clicker)
        # someone other than the requester clicking is an approval: the trail tells them apart
        await self._decide(clicker, "confirm" if clicker == intent.user else "approve", target, decision)
        if not decision.allowed:
            await reply(slack_blocks.text_message(
                messages.denied("confirm", ", ".join(intent.templates), decision.reason)))
            return
        claim = await self.db.run(self.intents.claim, intent.id, clicker)
        if claim is not Claim.CLAIMED:
            again = await self.db.run(self.intents.get, intent.id)
            used_by = again.claimed_by if claim is Claim.USED and again else None
            text = (messages.intent_used(used_by) if used_by
                    else messages.intent_expired(int(self.intents.ttl // 60)))
            await self._refuse(clicker, "confirm", target,
                               f"already used by {used_by}" if used_by else "expired", reply, text)
            return
        channel = intent.channel or clicked_channel(body) or intent.user
        try:
            tasks = await self._start(intent, channel)
        except Exception as exc:
            reference = secrets.token_hex(3)
            log.error("starting %s failed, reference %s", intent.templates, reference, exc_info=exc)
            # nothing (or not everything) was queued: let a second click try again
            released = await self.db.run(self.intents.unclaim, intent.id, clicker)
            await reply(slack_blocks.text_message(
                messages.start_failed(intent.templates, reference, released)))
            return
        publishing = messages.publishing(len(tasks), intent.user, clicker)
        await respond(slack_blocks.text_message(publishing), replace_original=True)
        links = await self._task_permalinks(tasks)
        if links:
            await respond(slack_blocks.publishing_message(publishing, links), replace_original=True)

    async def _task_permalinks(self, tasks: list[Task]) -> list[tuple[str, str]]:
        """(template, permalink) of each task message the notifier posts within
        ``PERMALINK_WAIT``; a task whose message is not there by then goes unlinked."""
        deadline = time.monotonic() + PERMALINK_WAIT
        posted: dict[str, Task] = {}
        while len(posted) < len(tasks):
            for task in tasks:
                if task.id not in posted:
                    now = await self.db.run(self.store.get, task.id)
                    if now.channel and now.message_ts:
                        posted[task.id] = now
            if len(posted) == len(tasks) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(PERMALINK_POLL)
        links = []
        for task in tasks:
            if (now := posted.get(task.id)) is None:
                continue
            try:
                resp = await self.client.chat_getPermalink(channel=now.channel,
                                                           message_ts=now.message_ts)
            except SlackApiError as exc:
                log.info("chat.getPermalink for task %s failed: %s", task.id,
                         exc.response.get("error"))
                continue
            links.append((task.template, str(resp["permalink"])))
        return links

    async def _may_confirm(self, intent: Intent, clicker: str) -> Decision:
        decision = slack_access.may_confirm(intent.rule, requester=intent.user, clicker=clicker)
        if not decision.allowed:
            return decision
        for who in dict.fromkeys([intent.user, clicker]):
            groups = await self._groups(who)
            for name in intent.templates:
                decision = slack_access.may_publish(self.catalog, name, user=who, groups=groups,
                                                    channel=intent.channel)
                if not decision.allowed:
                    return decision
        return slack_access.ALLOW

    async def _start(self, intent: Intent, channel: str) -> list[Task]:
        plans = await self._plans(intent.templates, check_cache=False)
        tasks = []
        for p in plans:
            notify = self.catalog.connectors[p.connector].notify_channel
            task, _ = await self.db.run(enqueue, self.store, p, requested_by=intent.user,
                               channel=notify or channel,
                               idempotency_key=f"{intent.id}:{p.template}")
            tasks.append(task)
        self.wake_runner()
        return tasks

    async def dismiss(self, body: dict[str, Any], respond: Respond) -> None:
        clicker = body["user"]["id"]
        intent_id = body["actions"][0].get("value") or ""
        intent = await self.db.run(self.intents.get, intent_id) if intent_id else None
        if intent is None:
            await self._refuse(clicker, "dismiss", intent_id, "unknown confirmation",
                               ephemeral(respond), messages.intent_unknown())
            return
        if clicker != intent.user:
            await self._decide(clicker, "dismiss", ",".join(intent.templates),
                         Decision(False, messages.reason_not_requester(intent.user)))
            await ephemeral(respond)(slack_blocks.text_message(messages.denied(
                "cancel", ", ".join(intent.templates), messages.reason_not_requester(intent.user))))
            return
        if await self.db.run(self.intents.cancel, intent.id, clicker) is Claim.CLAIMED:
            await respond(slack_blocks.text_message(messages.publish_cancelled(clicker)),
                          replace_original=True)
            return
        await self._refuse(clicker, "dismiss", ",".join(intent.templates),
                           "already used, withdrawn or expired", ephemeral(respond),
                           messages.intent_unknown())

    async def reject(self, body: dict[str, Any], respond: Respond) -> None:
        """Reject an approval card (an approver), or withdraw it (its requester); the card
        says who, for everyone in the channel."""
        clicker = body["user"]["id"]
        intent_id = body["actions"][0].get("value") or ""
        reply = ephemeral(respond)
        intent = await self.db.run(self.intents.get, intent_id) if intent_id else None
        if intent is None:
            await self._refuse(clicker, "reject", intent_id, "unknown confirmation", reply,
                               messages.intent_unknown())
            return
        target = ",".join(intent.templates)
        decision = (slack_access.ALLOW if clicker == intent.user
                    else await self._may_confirm(intent, clicker))
        await self._decide(clicker, "reject", target, decision)
        if not decision.allowed:
            await reply(slack_blocks.text_message(
                messages.denied("reject", ", ".join(intent.templates), decision.reason)))
            return
        if await self.db.run(self.intents.cancel, intent.id, clicker) is not Claim.CLAIMED:
            await self._refuse(clicker, "reject", target, "already used, withdrawn or expired",
                               reply, messages.intent_unknown())
            return
        await respond(slack_blocks.text_message(
            messages.approval_rejected(clicker, intent.user, intent.templates)), replace_original=True)

    async def expire_approvals(self) -> int:
        """Edit every approval card that expired unanswered; returns how many were closed."""
        closed = await self.db.run(self.intents.expire_cards)
        for intent in closed:
            assert intent.card_channel and intent.card_ts
            message = slack_blocks.text_message(messages.approval_expired(intent.user, intent.templates))
            try:
                await self.client.chat_update(channel=intent.card_channel, ts=intent.card_ts,
                                              **message.payload())
            except SlackApiError as exc:
                log.warning("cannot edit the expired approval card %s: %s", intent.id,
                            exc.response.get("error"))
        return len(closed)

    # ------------------------------------------------------------ task message buttons
    async def _task_decision(self, task: Task, user: str, action: str) -> Decision:
        if user == task.requested_by:
            decision = slack_access.ALLOW
        else:
            decision = slack_access.may_publish(self.catalog, task.template, user=user,
                                                groups=await self._groups(user), channel=None,
                                                check_channel=False)
        return await self._decide(user, action, task.id, decision)

    async def _task_action(self, body: dict[str, Any], respond: Respond,
                           action: str) -> tuple[Task, str, Reply] | None:
        """The task a Cancel/Retry button names, if this user may act on it (else a denial)."""
        user = body["user"]["id"]
        reply = ephemeral(respond)
        task = await self._clicked_task(body, action, reply)
        if task is None:
            return None
        decision = await self._task_decision(task, user, action)
        if not decision.allowed:
            await reply(slack_blocks.text_message(messages.denied(action, task.id,
                                                                  decision.reason)))
            return None
        return task, user, reply

    async def _clicked_task(self, body: dict[str, Any], action: str, reply: Reply) -> Task | None:
        """The task a button names; an unknown id is refused (audited)."""
        task_id = body["actions"][0].get("value") or ""
        try:
            return await self.db.run(self.store.get, task_id)
        except TaskNotFound:
            await self._refuse(body["user"]["id"], action, task_id, "no such task", reply,
                               messages.no_task(slack_blocks.escape(task_id)))
            return None

    async def task_cancel(self, body: dict[str, Any], respond: Respond) -> None:
        found = await self._task_action(body, respond, "cancel")
        if found is None:
            return
        task, user, reply = found
        if task.finished:
            await self._refuse(user, "cancel", task.id, f"the task is {states.LABELS[task.status].lower()}",
                               reply, messages.already_finished(task.id, states.LABELS[task.status]))
            return
        await self.db.run(self.store.request_cancel, task.id, user, messages.cancel_requested_by(user))
        await reply(slack_blocks.text_message(messages.cancel_ack(task.id)))

    async def task_retry(self, body: dict[str, Any], respond: Respond) -> None:
        """A retry is a new publish: the clicker must be allowed to publish the template from
        this channel now, and a target that needs a second person's approval gets a new
        approval card instead of a task."""
        user = body["user"]["id"]
        reply = ephemeral(respond)
        task = await self._clicked_task(body, "retry", reply)
        if task is None:
            return
        if task.status not in (states.FAILED, states.CANCELLED):
            await self._refuse(user, "retry", task.id, f"the task is {states.LABELS[task.status].lower()}",
                               reply, messages.already_finished(task.id, states.LABELS[task.status]))
            return
        channel = clicked_channel(body) or task.channel
        decision = await self._decide(user, "retry", task.id, slack_access.may_publish(
            self.catalog, task.template, user=user, groups=await self._groups(user),
            channel=channel))
        if not decision.allowed:
            await reply(slack_blocks.text_message(messages.denied("retry", task.id,
                                                                  decision.reason)))
            return
        if (earlier := await self.db.run(find_retry, self.store, task)) is not None:
            link = await Permalinks(self.client).of(earlier)
            await reply(slack_blocks.text_message(messages.already_retried(
                task.id, earlier.id, link.url if link else None, states.LABELS[earlier.status])))
            return
        if slack_access.approval_rule(self.catalog, [task.template]) == "second_person":
            await self.request(user, channel, [task.template], reply,
                               intent_id=retry_intent_id(task.id))
            return
        new = await self.db.run(self.store.retry, task.id, retry_key(task.id), user,
                                messages.retried(task.id, user), new_image_name(task.template))
        self.wake_runner()
        await reply(slack_blocks.text_message(messages.retry_ack(task.id, new.id)))

    # ------------------------------------------------------------ App Home
    async def home_opened(self, event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        await self._publish_home(event["user"], mine=False)

    async def _publish_home(self, user: str, *, mine: bool) -> None:
        names = await self._allowed_templates(user, None)
        rows = [(n, self.catalog.templates[n].icon, self.catalog.templates[n].description)
                for n in names]
        tasks = await self._tasks_view(user, mine, slack_blocks.HOME_TASKS)
        view = slack_blocks.home_view(rows, tasks, mine=mine, workspace_url=self.workspace_url,
                                      views=await self.db.run(task_views, self.store, tasks))
        await self.client.views_publish(user_id=user, view=view)

    async def home_tasks(self, body: dict[str, Any]) -> None:
        """App Home's Mine/All buttons: the tasks list again, filtered."""
        await self._publish_home(body["user"]["id"],
                                 mine=body["actions"][0].get("value") == messages.STATUS_MINE)

    async def home_publish(self, body: dict[str, Any]) -> None:
        """Publish from App Home. A template that needs a second person's approval has no
        channel for its card there: a dialog asks where to post it, then the flow is the
        channel's."""
        user = body["user"]["id"]
        name = body["actions"][0].get("value") or ""
        trigger = body.get("trigger_id")
        if (name in self.catalog.templates and isinstance(trigger, str) and trigger
                and slack_access.approval_rule(self.catalog, [name]) == "second_person"):
            view = slack_blocks.approval_channel_modal(name, self._approval_channel(name))
            await self.client.views_open(trigger_id=trigger, view=view)
            return
        await self.request(user, None, [name], self._dm(user, None))

    def _approval_channel(self, name: str) -> str | None:
        """Where a template's approvers likely are: its connector's notify_channel, else the
        first channel its access rules allow."""
        template = self.catalog.templates[name]
        connector = self.catalog.connectors.get(template.connector)
        if connector is not None and connector.notify_channel:
            return connector.notify_channel
        for access in (template.access, connector.access if connector else None):
            if access is not None and access.channels:
                return access.channels[0]
        return None

    async def approval_channel_submitted(self, body: dict[str, Any]) -> None:
        user = body["user"]["id"]
        view = body["view"]
        state = _field(_field(_field(view.get("state"), "values"), slack_blocks.BLOCK_APPROVAL_CHANNEL),
                       slack_blocks.ACTION_APPROVAL_CHANNEL)
        channel = _field(state, "selected_conversation")
        channel = channel if isinstance(channel, str) and channel else None
        await self.request(user, channel, [view.get("private_metadata") or ""], self._dm(user, channel))
