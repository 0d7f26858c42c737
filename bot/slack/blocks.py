"""Block Kit messages and views, built with ``slack_sdk.models.blocks`` (whose
``to_dict()`` validates field lengths); every message also gets a plain-text
``text`` fallback and is checked against the 50-blocks-per-message limit.

Wording comes from :mod:`bot.messages`; this module only arranges it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    ConversationFilter,
    ConversationSelectElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextObject,
    SectionBlock,
    StaticMultiSelectElement,
)
from slack_sdk.models.views import View

from bot import messages
from bot.runner.planning import PublishPlan
from bot.slack.people import name_users
from bot.slack.task_retries import TaskLink
from bot.slack.task_view import TaskView, task_view
from bot.store import states
from bot.store.states import EventKind
from bot.store.task_store import Event, Task

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 3000
#: Templates on one confirm card (one block each in the compact layout).
MAX_CARD_TEMPLATES = 40
#: With at most this many templates, each gets its own three-block section.
DETAILED_CARD_TEMPLATES = 12
HOME_TASKS = 10

# action and view ids the app listens to
ACTION_CONFIRM = "intent_confirm"
ACTION_DISMISS = "intent_cancel"
ACTION_REJECT = "intent_reject"
ACTION_TASK_CANCEL = "task_cancel"
ACTION_TASK_RETRY = "task_retry"
ACTION_HOME_PUBLISH = "home_publish"
ACTION_OPEN_LINK = "open_link"
ACTION_HOME_TASKS = "home_tasks"
VIEW_PUBLISH = "publish_modal"
VIEW_CONFIRM = "publish_confirm"
VIEW_NOTICE = "publish_notice"
BLOCK_TEMPLATES = "templates"
ACTION_TEMPLATES = "selected"
VIEW_APPROVAL_CHANNEL = "approval_channel_modal"
BLOCK_APPROVAL_CHANNEL = "approval_channel"
ACTION_APPROVAL_CHANNEL = "channel"


class TooManyBlocks(ValueError):
    pass


@dataclass
class Message:
    text: str
    blocks: list[Block] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """``text`` and validated ``blocks`` for chat.* and response_url."""
        if len(self.blocks) > MAX_MESSAGE_BLOCKS:
            raise TooManyBlocks(f"{len(self.blocks)} blocks (Slack allows {MAX_MESSAGE_BLOCKS})")
        return {"text": clip(self.text, 3900), "blocks": [b.to_dict() for b in self.blocks]}


def escape(text: str) -> str:
    """Make user or catalog text inert in mrkdwn (no mentions, links or markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def section(text: str, **kwargs: Any) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=clip(text, MAX_TEXT)), **kwargs)


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=clip(text, MAX_TEXT))])


def button(text: str, action_id: str, value: str | None = None, *, style: str | None = None,
           url: str | None = None, confirm: ConfirmObject | None = None) -> ButtonElement:
    return ButtonElement(text=PlainTextObject(text=clip(text, 75)), action_id=action_id,
                         value=value, style=style, url=url, confirm=confirm)


def text_message(text: str) -> Message:
    return Message(text=text, blocks=[section(text)])


# ------------------------------------------------------------------ confirm card
def _plan_blocks(p: PublishPlan, detailed: bool) -> list[Block]:
    title = messages.plan_title(p.icon, escape(p.template), escape(p.description))
    layers = messages.plan_layers(p.os_layer, p.app_layers, p.platform_layer)
    target = messages.plan_target(p.connector, p.platform, p.size_gib, p.filesystem, p.disk_format)
    scripts = messages.plan_scripts(p.scripts, p.cache_hit)
    details = [escape(t) for t in (layers, target, scripts)]
    if not detailed:
        return [section("\n".join([title, *details]))]
    return [
        section(title),
        SectionBlock(fields=[MarkdownTextObject(text=clip(t, 2000)) for t in details]),
        DividerBlock(),
    ]


def confirm_card(plans: Sequence[PublishPlan], intent_id: str, requester: str, *,
                 second_person: bool, ttl_minutes: int) -> Message:
    if len(plans) > MAX_CARD_TEMPLATES:
        raise TooManyBlocks(f"at most {MAX_CARD_TEMPLATES} templates on one card")
    detailed = len(plans) <= DETAILED_CARD_TEMPLATES
    blocks: list[Block] = [
        HeaderBlock(text=messages.CONFIRM_TITLE),
        section(messages.confirm_intro(len(plans), requester)),
    ]
    for p in plans:
        blocks += _plan_blocks(p, detailed)
    if second_person:
        blocks.append(section(messages.confirm_needs_approval(requester)))
    blocks.append(context(messages.confirm_expires(ttl_minutes)))
    confirm = ConfirmObject(title=messages.CONFIRM_DIALOG_TITLE,
                            text=clip(messages.confirm_fallback([p.template for p in plans]), 300),
                            confirm=messages.CONFIRM_DIALOG_YES, deny=messages.CONFIRM_DIALOG_NO)
    blocks.append(ActionsBlock(block_id="intent", elements=[
        button(messages.BUTTON_PUBLISH, ACTION_CONFIRM, intent_id, style="primary",
               confirm=confirm if second_person else None),
        button(messages.BUTTON_CANCEL, ACTION_DISMISS, intent_id),
    ]))
    return Message(text=messages.confirm_fallback([p.template for p in plans]), blocks=blocks)


def approval_card(plans: Sequence[PublishPlan], intent_id: str, requester: str, *,
                  approvers: Sequence[str], expires_at: float) -> Message:
    """The card a protected target's publish waits on, posted in the channel: it speaks to
    ``approvers`` (Slack mentions), shows its expiry, and has Approve and Reject."""
    if len(plans) > MAX_CARD_TEMPLATES:
        raise TooManyBlocks(f"at most {MAX_CARD_TEMPLATES} templates on one card")
    detailed = len(plans) <= DETAILED_CARD_TEMPLATES
    names = [p.template for p in plans]
    blocks: list[Block] = [
        HeaderBlock(text=messages.CONFIRM_TITLE),
        section(messages.approval_ask(requester, len(plans), list(approvers))),
    ]
    for p in plans:
        blocks += _plan_blocks(p, detailed)
    blocks.append(context(messages.approval_expires(expires_at)))
    confirm = ConfirmObject(title=messages.APPROVE_DIALOG_TITLE,
                            text=clip(messages.confirm_fallback(names), 300),
                            confirm=messages.APPROVE_DIALOG_YES, deny=messages.APPROVE_DIALOG_NO)
    blocks.append(ActionsBlock(block_id="intent", elements=[
        button(messages.BUTTON_APPROVE, ACTION_CONFIRM, intent_id, style="primary", confirm=confirm),
        button(messages.BUTTON_REJECT, ACTION_REJECT, intent_id, style="danger"),
    ]))
    return Message(text=messages.approval_ask(requester, len(plans), list(approvers)), blocks=blocks)


def publishing_message(text: str, links: Sequence[tuple[str, str]]) -> Message:
    """What the confirm card becomes once the task messages exist: a link to each."""
    return Message(text=text, blocks=[section(text), *text_sections(messages.task_links(list(links)))])


def text_sections(lines: Sequence[str], room: int = MAX_MESSAGE_BLOCKS - 1) -> list[Block]:
    """``lines`` in as few sections as fit, never splitting a line (nor a link in it)."""
    chunks: list[str] = []
    for line in lines:
        if chunks and len(chunks[-1]) + len(line) + 1 <= MAX_TEXT:
            chunks[-1] += "\n" + line
        else:
            chunks.append(clip(line, MAX_TEXT))
    return [section(c) for c in chunks[:room]]


# ------------------------------------------------------------------ task message
def task_times(task: Task, now: float | None = None) -> str:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(task.created_at))
    end = task.finished_at if task.finished and task.finished_at else (now or time.time())
    return messages.task_times(messages.slack_date(task.created_at, started),
                               max(0.0, end - task.created_at), task.finished)


def task_message(task: Task, view: TaskView | None = None, *, retry_of: TaskLink | None = None,
                 retried_as: TaskLink | None = None, cancelled_by: str | None = None,
                 approved_by: str | None = None) -> Message:
    """``view``: the step and overall progress from the task's events (else from the task);
    ``retry_of``/``retried_as``: the task this one retries / the retry Retry made of it;
    ``cancelled_by``: who asked for the cancel of this task, if anyone did;
    ``approved_by``: the second person who approved it, on a protected target."""
    view = view or task_view(task)
    label = states.LABELS[task.status]
    step = messages.task_step(view.step, view.steps, escape(view.stage)) if view.step else ""
    blocks: list[Block] = [
        HeaderBlock(text=clip(messages.task_header(task.template), 150)),
        section(messages.task_status_line(label, step, task.requested_by, task.platform)),
    ]
    if approved_by and approved_by != task.requested_by:
        blocks.append(context(messages.approved_by(approved_by)))
    if cancelled_by:
        blocks.append(context(messages.cancelled_by(cancelled_by, task.finished)))
    if not task.finished:
        blocks.append(section(messages.progress_bar(view.percent)))
    blocks.append(context(task_times(task)))
    error = view.error if view.error is not None else task.error
    blocks.append(context(messages.task_ref(task.id, escape(error) if error else None)))
    if retry_of is not None:
        blocks.append(context(messages.retry_of(retry_of.task_id, retry_of.url)))
    if retried_as is not None:
        blocks.append(context(messages.retried_as(retried_as.task_id, retried_as.url)))
    elements: list[ButtonElement] = []
    if task.link and task.link.startswith(("http://", "https://")):
        elements.append(button(messages.BUTTON_OPEN, ACTION_OPEN_LINK, task.id, url=task.link))
    if not task.finished:
        elements.append(button(messages.BUTTON_CANCEL, ACTION_TASK_CANCEL, task.id, style="danger",
                               confirm=cancel_confirm(task)))
    elif task.status in (states.FAILED, states.CANCELLED) and retried_as is None:
        elements.append(button(messages.BUTTON_RETRY, ACTION_TASK_RETRY, task.id,
                               style="primary"))
    if elements:
        blocks.append(ActionsBlock(block_id="task", elements=elements))
    return Message(text=messages.task_fallback(task.template, label, view.percent), blocks=blocks)


def cancel_confirm(task: Task) -> ConfirmObject:
    """A task's Cancel sits on a shared message: one stray click must not stop it."""
    return ConfirmObject(title=messages.CANCEL_DIALOG_TITLE,
                         text=clip(messages.cancel_dialog(task.template), 300),
                         confirm=messages.CANCEL_DIALOG_YES, deny=messages.CANCEL_DIALOG_NO,
                         style="danger")


def _cleanup(task: Task, event: Event) -> str:
    removed = event.data.get("removed") or []
    return messages.cleanup_note(len(removed), int(event.data.get("not_removed") or 0), task.id)


def failure_reason(task: Task, event: Event) -> str:
    """Why a task failed, for Slack: the event's reason (none for events older than it: the
    task's error)."""
    return str(event.data.get("reason") or task.error or "")


def event_text(task: Task, event: Event) -> str:
    """An event as Slack shows it (escaped): a cleanup in words from the event's data, since
    its message names paths and the platform's errors (for the CLI and the log)."""
    if "removed" not in event.data:
        return escape(event.message)
    if event.kind == EventKind.FAILED:
        return escape(messages.failed_briefly(failure_reason(task, event), _cleanup(task, event)))
    if event.kind == EventKind.CANCELLED:
        kept = event.data.get("kept")
        return escape(messages.cancelled_briefly(_cleanup(task, event), str(kept) if kept else None))
    if event.kind == EventKind.CLEANUP:
        return escape(messages.cleaned_up_briefly(_cleanup(task, event)))
    if event.kind == EventKind.RESUMED:
        return escape(messages.resumed_briefly(_cleanup(task, event)))
    return escape(event.message)


def thread_reply(task: Task, event: Event, *, cancelled_by: str | None = None) -> Message | None:
    """The thread reply for an event, or None if the event only changes the task message."""
    msg = event_text(task, event)
    if event.kind == EventKind.DISK_CREATED:
        # the summary without the link the event's message ends with; a file:// link opens
        # nothing in Slack (the next step names the folder)
        summary = event.data.get("summary")
        link = event.data.get("link") or task.link
        text = messages.thread_published(
            escape(str(summary)) if summary else msg,
            None if link and link.startswith("file:") else link,
            escape(str(event.data.get("next_steps") or "")), bool(event.data.get("guest_login")))
    elif event.kind in (EventKind.NEXT_STEPS, EventKind.HINT):
        return None  # already in the disk-created reply
    elif event.kind == EventKind.WAITING:
        text = messages.thread_waiting(msg, task.requested_by)
    elif event.kind == EventKind.DONE:
        text = messages.thread_done(escape(task.template), msg)
    elif event.kind == EventKind.FAILED:
        text = messages.thread_failed(escape(task.template), msg, task.requested_by,
                                      messages.failure_advice(event.data.get("error_class")))
    elif event.kind == EventKind.CANCELLED:
        text = messages.thread_cancelled(escape(task.template), msg)
        if cancelled_by:
            text += "\n" + messages.cancelled_by(cancelled_by, True)
    else:
        return None
    return text_message(text)


# ------------------------------------------------------------------ modal and App Home
def _option_description(description: str, needs_approval: bool) -> str | None:
    parts = [description] if description else []
    if needs_approval:
        parts.insert(0, f"\U0001f512 {messages.MODAL_NEEDS_APPROVAL}")
    return clip(" \u00b7 ".join(parts), 75) if parts else None


def publish_modal(templates: Sequence[tuple[str, str]], channel: str | None,
                  needs_approval: frozenset[str] = frozenset()) -> View:
    """``templates``: (name, description) pairs the user may publish; those in
    ``needs_approval`` are marked."""
    options = [Option(value=name, text=clip(name, 75),
                      description=_option_description(desc, name in needs_approval))
               for name, desc in templates[:100]]
    return View(
        type="modal", callback_id=VIEW_PUBLISH, private_metadata=channel or "",
        title=messages.MODAL_TITLE[:24], submit=messages.MODAL_SUBMIT,
        close=messages.MODAL_CLOSE,
        blocks=[InputBlock(
            block_id=BLOCK_TEMPLATES, label=messages.MODAL_LABEL,
            element=StaticMultiSelectElement(action_id=ACTION_TEMPLATES,
                                             placeholder=messages.MODAL_PLACEHOLDER,
                                             options=options),
        )],
    )


def modal_step(message: Message, channel: str | None) -> View:
    """The publish modal's next view showing ``message``: a confirm card becomes the confirm
    step (its Publish button the modal's submit, the intent id in ``private_metadata``); any
    other message a notice with only Close."""
    intent_id = _intent_of(message.blocks)
    blocks = [b for b in message.blocks if not (isinstance(b, ActionsBlock) and b.block_id == "intent")]
    if len(blocks) > MAX_VIEW_BLOCKS:
        raise TooManyBlocks(f"{len(blocks)} blocks (a view allows {MAX_VIEW_BLOCKS})")
    if intent_id is None:
        return View(type="modal", callback_id=VIEW_NOTICE, title=messages.MODAL_TITLE[:24],
                    close=messages.MODAL_CLOSE, blocks=blocks)
    return View(type="modal", callback_id=VIEW_CONFIRM, title=messages.MODAL_TITLE[:24],
                submit=messages.CONFIRM_DIALOG_YES, close=messages.MODAL_CLOSE,
                private_metadata=json.dumps({"intent": intent_id, "channel": channel}),
                blocks=blocks)


def _intent_of(blocks: Sequence[Block]) -> str | None:
    for block in blocks:
        if isinstance(block, ActionsBlock) and block.block_id == "intent":
            for element in block.elements:
                if isinstance(element, ButtonElement) and element.action_id == ACTION_CONFIRM:
                    return element.value
    return None


def modal_notice(text: str) -> View:
    """A modal view saying ``text`` (what the modal shows while the next step is prepared)."""
    return View(type="modal", callback_id=VIEW_NOTICE, title=messages.MODAL_TITLE[:24],
                close=messages.MODAL_CLOSE, blocks=[section(text)])


def approval_channel_modal(template: str, channel: str | None) -> View:
    """From App Home (no channel): where to post a protected template's approval card;
    ``channel`` is offered first."""
    return View(
        type="modal", callback_id=VIEW_APPROVAL_CHANNEL, private_metadata=template,
        title=messages.APPROVAL_CHANNEL_TITLE[:24], submit=messages.APPROVAL_CHANNEL_SUBMIT,
        close=messages.MODAL_CLOSE,
        blocks=[
            section(messages.approval_channel_intro(escape(template))),
            InputBlock(block_id=BLOCK_APPROVAL_CHANNEL, label=messages.APPROVAL_CHANNEL_LABEL,
                       element=ConversationSelectElement(
                           action_id=ACTION_APPROVAL_CHANNEL, initial_conversation=channel,
                           filter=ConversationFilter(include=["public", "private"],
                                                     exclude_bot_users=True))),
        ],
    )


def home_view(templates: Sequence[tuple[str, str, str]], tasks: Sequence[Task], *,
              mine: bool = False, workspace_url: str | None = None,
              views: Mapping[str, TaskView] | None = None) -> View:
    """``templates``: (name, icon, description) the user may publish; ``tasks``: the user's
    own (``mine``) or all they may see; ``views``: as for ``status_message``. Publish
    buttons stay plain: one primary per set."""
    tasks = list(tasks)[:HOME_TASKS]
    room = MAX_VIEW_BLOCKS - 7 - len(tasks)
    blocks: list[Block] = [HeaderBlock(text=messages.HOME_TEMPLATES)]
    if not templates:
        blocks.append(section(messages.HOME_NO_TEMPLATES))
    for name, icon, desc in templates[:room]:
        blocks.append(section(messages.list_line(icon, escape(name), escape(desc), True),
                              accessory=button(messages.BUTTON_PUBLISH_ONE, ACTION_HOME_PUBLISH,
                                               name)))
    blocks += [DividerBlock(),
               HeaderBlock(text=messages.HOME_TASKS_MINE if mine else messages.HOME_TASKS),
               ActionsBlock(block_id="home_tasks", elements=[
                   button(text, ACTION_HOME_TASKS + "_" + value, value,
                          style="primary" if (value == messages.STATUS_MINE) == mine else None)
                   for text, value in ((messages.BUTTON_TASKS_MINE, messages.STATUS_MINE),
                                       (messages.BUTTON_TASKS_ALL, messages.STATUS_ALL))])]
    if not tasks:
        blocks.append(section(messages.no_status_mine() if mine else messages.HOME_NO_TASKS))
    blocks += [section(status_line(t, workspace_url, (views or {}).get(t.id))) for t in tasks]
    return View(type="home", blocks=blocks)


def message_permalink(workspace_url: str | None, channel: str | None, ts: str | None) -> str | None:
    """The link to a message, as Slack forms it: ``<workspace>/archives/<channel>/p<ts digits>``
    (built, not asked for: a status list would cost one chat.getPermalink per line)."""
    if not (workspace_url and workspace_url.startswith("https://") and channel and ts):
        return None
    return f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


def status_line(t: Task, workspace_url: str | None = None, view: TaskView | None = None) -> str:
    """``view``: the step and overall progress from the task's events (else from the task);
    a queued or finished task shows neither."""
    link = t.link if t.link and t.link.startswith(("http://", "https://")) else None
    view = view or task_view(t)
    working = view.step > 0 and not t.finished and t.status != states.QUEUED
    return messages.status_line(t.id, escape(t.template), states.LABELS[t.status],
                                messages.task_step(view.step, view.steps, escape(view.stage))
                                if working else "",
                                view.percent if working else None, link,
                                requester=t.requested_by, started=t.created_at,
                                message_link=message_permalink(workspace_url, t.channel,
                                                               t.message_ts))


def status_message(tasks: Sequence[Task], heading: str | None = None,
                   workspace_url: str | None = None, *, mine: bool = False,
                   views: Mapping[str, TaskView] | None = None) -> Message:
    """``views``: task id -> its view (``task_views``), for the step and overall progress."""
    if not tasks:
        return text_message(messages.no_status_mine() if mine else messages.no_status())
    lines = [status_line(t, workspace_url, (views or {}).get(t.id)) for t in tasks]
    head = [heading] if heading else []
    return Message(text="\n".join([*head, *lines]),
                   blocks=[section(line) for line in [*head, *lines][:MAX_MESSAGE_BLOCKS]])


def task_detail(task: Task, events: Sequence[Event], *,
                names: Mapping[str, str] | None = None) -> Message:
    """``names``: user id -> display name, shown instead of the bare ids in event texts."""
    base = task_message(task, task_view(task, events))
    shown = {user: escape(name) for user, name in (names or {}).items()}
    lines = [name_users(f"`{e.kind}` {event_text(task, e)}", shown)
             for e in events if e.kind != EventKind.PROGRESS]
    text = clip("\n".join(lines[-30:]), MAX_TEXT)
    blocks = [b for b in base.blocks if not isinstance(b, ActionsBlock)]
    if text:
        blocks.append(section(text))
    return Message(text=base.text, blocks=blocks)


def list_message(rows: Sequence[tuple[str, str, str, bool]]) -> Message:
    """``rows``: (name, icon, description, allowed)."""
    if not rows:
        return text_message(messages.NO_TEMPLATES)
    lines = [messages.list_line(icon, escape(name), escape(desc), ok) for name, icon, desc, ok in rows]
    return Message(text="\n".join(lines), blocks=text_sections(lines, MAX_MESSAGE_BLOCKS))
