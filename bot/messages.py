"""Every user-facing sentence of layerbot, shared by the CLI and Slack."""

from __future__ import annotations

import time

TASK_TITLE = "Publishing Layered Image"

LOCAL_USER_HINT = (
    "If you see \u201cThis system was not shut down properly. Please log off immediately "
    "and contact your system administrator.\u201d, log in with a local user, not a domain user."
)


def task_created(template: str, requester: str) -> str:
    return f"{TASK_TITLE} \u00b7 {template} queued by {requester}"


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 layer``, ``3 layers``: the noun agrees with the number."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def stage_compositing(n_layers: int) -> str:
    return f"Compositing {counted(n_layers, 'layer')}"


def cache_hit(key: str) -> str:
    return f"cache hit: reusing composited disk {key[:12]}"


def cache_evicted(count: int, freed: int, limit_gib: float | None, min_free_gib: float) -> str:
    entries = "entry" if count == 1 else "entries"
    rules = ([f"stay under {limit_gib:g} GiB"] if limit_gib is not None else []) + (
        [f"keep {min_free_gib:g} GiB free on its disk"] if min_free_gib else [])
    return (f"cache: removed {count} least recently used {entries} ({human_bytes(freed)}) "
            f"to {' and '.join(rules)}")


def composited(size_bytes: int, fmt: str, seconds: float) -> str:
    return f"Composited disk: {human_bytes(size_bytes)} {fmt} in {seconds:.1f} s"


def stage_uploading(platform: str) -> str:
    return f"Uploading to {platform}"


def disk_created(summary: str, link: str) -> str:
    return f"Disk created: {summary} \u2014 {link}"


def waiting_for_shutdown() -> str:
    return "Waiting for the guest to run its scripts and shut down"


def done(elapsed: float) -> str:
    return f"Done in {human_duration(elapsed)}"


def failed(reason: str, removed: list[str]) -> str:
    if not removed:
        return f"Failed: {reason}"
    if reason.endswith("."):  # a sentence (failure_sentence)
        return f"Failed: {reason} Cleaned up: {', '.join(removed)}."
    return f"Failed: {reason}; cleaned up: {', '.join(removed)}"


#: What to do about a failure, by the error's class (adapters.base, compositor.errors).
_FAILURE_ADVICE = {
    "AuthError": "Ask an admin to check the connector's credentials.",
    "InsufficientSpaceError": "Free some space at the target, then click Retry.",
    "HostSpaceError": "Ask an admin to free space on the runner's disk, then click Retry.",
    "RetryableError": "The platform may be busy: click Retry in a few minutes.",
    "PlatformTimeoutError": "The platform did not answer in time: click Retry in a few minutes.",
    "GuestTimeoutError": "Check the VM's console: its scripts did not finish.",
    "TaskConfigError": "Ask an admin: the catalog changed since this task was queued.",
    "LayerError": "Ask an admin to check the layer.",
    "ToolMissingError": "Ask an admin to install the missing tool (`layerbot check`).",
}


def failure_advice(error_class: str | None) -> str:
    """What the requester does about a failure whose error (worded by the adapter or the
    compositor) was of this class; nothing for an unexpected one, whose text says it."""
    if not error_class:
        return ""
    return _FAILURE_ADVICE.get(error_class, "Fix that, then click Retry.")


def unexpected_failure(reference: str) -> str:
    return (f"layerbot hit an unexpected error (reference `{reference}`). Click Retry; if it "
            "happens again, ask an admin to look the reference up in the bot's log.")


def cancelled(removed: list[str], kept: str | None = None) -> str:
    """``kept``: the summary of what was already published; a cancel does not destroy it."""
    cleaned = "; cleaned up: " + ", ".join(removed) if removed else ""
    kept_note = (f"; kept {kept}: it was published before the cancel, remove it at the platform "
                 "if it is not wanted" if kept else "")
    return f"Cancelled{cleaned}{kept_note}"


def resume_cleanup_failed(problems: list[str]) -> str:
    return ("the previous attempt left what could not be removed (still recorded on this task; "
            "remove it at the platform, then retry): " + "; ".join(problems))


def resume_cleanup_failed_briefly(problems: int, task_id: str) -> str:
    """:func:`resume_cleanup_failed` without the paths and the platform's words (Slack)."""
    return ("the previous attempt left " + cleanup_problems(problems, task_id)
            + "; remove it at the platform, then retry")


def cleanup_problems(problems: int, task_id: str) -> str:
    """What could not be removed, for Slack: the log's lines start with the task id."""
    items = "1 item" if problems == 1 else f"{problems} items"
    it = "it" if problems == 1 else "them"
    return (f"{items} could not be removed (an admin finds {it} in the log under reference "
            f"`{task_id}`, or with `layerbot task {task_id}`)")


def cleanup_note(removed: int, problems: int, task_id: str) -> str:
    """A cleanup in words, for Slack: ``removed`` lines of the cleanup, ``problems`` of them
    reporting what could not be removed."""
    done = removed - problems
    parts = []
    if done:
        parts.append("the partial upload was removed" if done == 1
                     else f"the {done} partial items were removed")
    if problems:
        parts.append(cleanup_problems(problems, task_id))
    return "; ".join(parts)


def failed_briefly(reason: str, cleanup: str) -> str:
    """:func:`failed` with the cleanup in words (:func:`cleanup_note`), for Slack."""
    return f"Failed: {reason.rstrip('.')}" + (f"; {cleanup}" if cleanup else "")


def cancelled_briefly(cleanup: str, kept: str | None) -> str:
    """:func:`cancelled` with the cleanup in words (:func:`cleanup_note`), for Slack."""
    return cancelled([cleanup] if cleanup else [], kept).replace("; cleaned up: ", "; ", 1)


def cleaned_up_briefly(cleanup: str) -> str:
    return cleanup[:1].upper() + cleanup[1:] if cleanup else "Nothing to remove"


def resumed_briefly(cleanup: str) -> str:
    return f"Resumed; {cleanup}" if cleanup else resumed_cleanup([])


def resumed_cleanup(removed: list[str]) -> str:
    if not removed:
        return "Resumed; nothing of the previous attempt had to be removed"
    return "Removed partial upload of the previous attempt: " + ", ".join(removed)


def connector_unusable(connector: str, exc: BaseException) -> str:
    return f"connector {connector!r} cannot be used: {exc}"


def too_many_attempts(count: int) -> str:
    return (f"gave up: the runners working this task died {count} times without finishing "
            "it (see `layerbot task` for the attempts)")


def image_name(template: str, stamp: str) -> str:
    return f"{template}-{stamp}"


def human_bytes(n: float) -> str:
    """``1.5 GiB``; a whole number without ``.0`` (``40 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            shown = f"{n:.0f}" if unit == "B" else f"{n:.1f}".removesuffix(".0")
            return f"{shown} {unit}"
        n /= 1024
    raise AssertionError("unreachable: TiB is the last unit")


def human_duration(elapsed: float) -> str:
    seconds = round(elapsed)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# ------------------------------------------------------------------ Slack
# Everything the Slack app says. Slack mrkdwn: *bold*, <@U123> mentions a user,
# <#C123> a channel, <url|text> a link.

CONFIRM_TITLE = "Review and publish"
BUTTON_PUBLISH = "Publish Layered Images"
BUTTON_CANCEL = "Cancel"
BUTTON_RETRY = "Retry"
BUTTON_PUBLISH_ONE = "Publish"
BUTTON_OPEN = "Open"
CONFIRM_DIALOG_TITLE = "Publish layered images?"
CONFIRM_DIALOG_YES = "Publish"
CONFIRM_DIALOG_NO = "Not yet"
MODAL_TITLE = "Publish Layered Image"
MODAL_SUBMIT = "Next"
MODAL_CLOSE = "Close"
MODAL_LABEL = "Image templates"
MODAL_PLACEHOLDER = "Choose templates"
MODAL_NEEDS_APPROVAL = "needs a second person's approval"
MODAL_PREPARING = "Preparing the details of your publish\u2026"
MODAL_STARTING = "Starting\u2026"
HOME_TEMPLATES = "Image templates you may publish"
HOME_TASKS = "Latest tasks"
HOME_TASKS_MINE = "Your latest tasks"
BUTTON_TASKS_MINE = "Mine"
BUTTON_TASKS_ALL = "All"
STATUS_MINE = "mine"
STATUS_ALL = "all"
HOME_NO_TEMPLATES = "There is no template you may publish. Ask an admin to add you to a template's `access:`."
HOME_NO_TASKS = "No tasks yet. Publish a template to start one."
NO_TEMPLATES = "There is no template you may publish here."
CACHE_REUSED = "yes, a cached disk is reused"
CACHE_MISS = "no, the layers are composited"
NONE = "none"

SLACK_HELP = (
    "*`/publish`* publishes layered images from image templates.\n"
    "\u2022 `/publish NAME [NAME...]` \u2014 show the *Review and publish* card for these "
    "templates, then click *Publish Layered Images*\n"
    "\u2022 `/publish` \u2014 choose templates in a dialog\n"
    "\u2022 `/publish list` \u2014 the templates you may publish\n"
    "\u2022 `/publish status [mine|all]` \u2014 your latest tasks, or everyone's you may see\n"
    "\u2022 `/publish status TEMPLATE` \u2014 the latest tasks of one template\n"
    "\u2022 `/publish status TASK` \u2014 one task and its events\n"
    "\u2022 `/publish help` \u2014 this text\n"
    "Each template starts one *Publishing Layered Image* task; its progress, the link to the "
    "disk and the next steps appear in a thread."
)

STATUS_EMOJI = {
    "Queued": ":hourglass_flowing_sand:",
    "Running": ":arrows_counterclockwise:",
    "Action required": ":point_right:",
    "Done": ":white_check_mark:",
    "Failed": ":x:",
    "Cancelled": ":no_entry_sign:",
}


def confirm_intro(count: int, requester: str) -> str:
    return f"<@{requester}> is about to publish {_images(count)}. Check the details and confirm."


def confirm_needs_approval(requester: str) -> str:
    return (f":lock: Protected target: a *second person* (not <@{requester}>) who may publish "
            "these templates must click *Publish Layered Images*.")


def confirm_expires(minutes: int) -> str:
    return f"This confirmation expires in {counted(minutes, 'minute')}."


def confirm_fallback(names: list[str]) -> str:
    return f"Publish {', '.join(names)}?"


def _labelled(singular: str, plural: str, items: list[str]) -> list[str]:
    """``*Label:* a, b`` with the label's number matching; nothing for no items."""
    if not items:
        return []
    return [f"*{singular if len(items) == 1 else plural}:* {', '.join(items)}"]


def plan_title(icon: str, template: str, description: str) -> str:
    return f"{icon} *{template}*" + (f" \u2014 {description}" if description else "")


def plan_layers(os_layer: str, app_layers: list[str], platform_layer: str | None) -> str:
    return "\n".join([f"*OS layer:* {os_layer}", *_labelled("App layer", "App layers", app_layers),
                      *_labelled("Platform layer", "Platform layers",
                                 [platform_layer] if platform_layer else [])])


def plan_target(connector: str, platform: str, size_gib: int, filesystem: str, fmt: str) -> str:
    return (f"*Connector:* {connector} ({platform})\n"
            f"*Disk:* {human_bytes(size_gib * 2**30)} {filesystem}, {fmt}")


def plan_scripts(scripts: list[str], cache_hit: bool) -> str:
    cached = CACHE_REUSED if cache_hit else CACHE_MISS
    return "\n".join([*_labelled("Script", "Scripts", scripts), f"*Cached disk:* {cached}"])


def approval_requested(requester: str, names: list[str]) -> str:
    return (f"Approval needed: <@{requester}> wants to publish {', '.join(names)}. "
            "The confirmation card is in this channel.")


BUTTON_APPROVE = "Approve"
BUTTON_REJECT = "Reject"
APPROVE_DIALOG_TITLE = "Approve this publish?"
APPROVE_DIALOG_YES = "Approve"
APPROVE_DIALOG_NO = "Not yet"


def approval_ask(requester: str, count: int, approvers: list[str]) -> str:
    """``approvers``: Slack mentions (``<@U1>``, ``<!subteam^S1>``); none: anyone allowed."""
    who = " or ".join(approvers) if approvers else "someone who may publish these templates"
    return (f":lock: {who}: <@{requester}> asks you to approve publishing {_images(count)} "
            "to a protected target. Check the details, then *Approve* or *Reject*.")


def approval_expires(expires_at: float) -> str:
    """``<!date^…>``: each reader sees the time in their own time zone."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at))
    return f"This request expires <!date^{int(expires_at)}^{{date_short_pretty}} at {{time}}|{fallback}>."


def approval_rejected(by: str, requester: str, names: list[str]) -> str:
    what = ", ".join(names)
    if by == requester:
        return f":no_entry_sign: Withdrawn by <@{by}>: {what} was not published."
    return (f":no_entry_sign: Rejected by <@{by}>: <@{requester}>'s request to publish {what}. "
            "Nothing was queued.")


def approval_expired(requester: str, names: list[str]) -> str:
    return (f":hourglass: Expired: nobody approved <@{requester}>'s request to publish "
            f"{', '.join(names)} in time. Nothing was queued; run `/publish` again.")


def approved_by(user: str) -> str:
    return f"Approved by <@{user}>"


APPROVAL_CHANNEL_TITLE = "Ask for approval"
APPROVAL_CHANNEL_SUBMIT = "Ask"
APPROVAL_CHANNEL_LABEL = "Post the approval request in"


def approval_channel_intro(template: str) -> str:
    return (f"{template} publishes to a protected target: someone else must approve it. Choose the "
            "channel where the approvers will see the request.")


def approval_needs_channel() -> str:
    return ("These templates need a second person to confirm: use `/publish` in a channel, "
            "where someone else can see the confirmation.")


def publishing(count: int, requester: str, approver: str | None = None) -> str:
    text = f"Publishing {_images(count)} \u2014 requested by <@{requester}>"
    if approver and approver != requester:
        text += f", approved by <@{approver}>"
    return text


def task_links(links: list[tuple[str, str]]) -> list[str]:
    """``links``: (template, permalink of its task message)."""
    return [f"\u2022 <{url}|{template}> \u2014 task message" for template, url in links]


def publish_cancelled(user: str) -> str:
    return f"Not published: <@{user}> cancelled the confirmation. Nothing was queued."


def intent_expired(minutes: int) -> str:
    return (f"This confirmation expired (they are valid for {counted(minutes, 'minute')}). "
            "Run `/publish` again.")


def approval_pending(requester: str, names: list[str]) -> str:
    return (f"An approval card for {', '.join(names)} (asked by <@{requester}>) is already in "
            "this channel, waiting for a second person.")


def intent_used(by: str) -> str:
    return f"This confirmation was already used by <@{by}>."


def intent_unknown() -> str:
    return "This confirmation is no longer known. Run `/publish` again."


def unknown_templates(problems: list[str]) -> str:
    return "Nothing was published: " + "; ".join(problems) + ". `/publish list` shows the templates."


def denied(action: str, target: str, reason: str) -> str:
    return f":no_entry: You may not {action} {target}: {reason}."


def slack_error(what: str) -> str:
    return f":warning: {what}. Nothing was published; try again, or ask an admin to check the bot's log."


FINISHED_LABELS = ("Done", "Failed", "Cancelled")


def task_header(template: str) -> str:
    """The same whatever the state (it said "Publishing" after Done); the status line tells."""
    return f"Layered image \u00b7 {template}"


def task_step(step: int, steps: int, stage: str) -> str:
    """``Step 2 of 3 · Uploading to VMware vSphere``."""
    return f"Step {step} of {steps} \u00b7 {stage}" if stage else f"Step {step} of {steps}"


def task_status_line(label: str, stage: str, requester: str, platform: str) -> str:
    """``stage``: the step while working (``task_step``), nothing once queued or finished."""
    emoji = STATUS_EMOJI.get(label, "")
    stage_text = f" \u00b7 {stage}" if stage and label not in (*FINISHED_LABELS, "Queued") else ""
    return f"{emoji} *{label}*{stage_text}\nRequested by <@{requester}> \u00b7 {platform}"


def slack_date(at: float, fallback: str) -> str:
    """A time every reader sees in their own time zone (Slack's date formatting)."""
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def task_times(started: str, elapsed: float, finished: bool) -> str:
    """``started``: a :func:`slack_date`."""
    took = f"took {human_duration(elapsed)}" if finished else f"{human_duration(elapsed)} so far"
    return f"Started {started} \u00b7 {took}"


def task_fallback(template: str, label: str, percent: float) -> str:
    if label in FINISHED_LABELS:
        return f"{task_header(template)}: {label}"
    return f"{task_header(template)}: {label} ({percent:.0f}%)"


def progress_bar(percent: float, width: int = 20) -> str:
    filled = max(0, min(width, round(percent / 100 * width)))
    return "`" + "\u2588" * filled + "\u2591" * (width - filled) + f"` {percent:.0f}%"


def task_ref(task_id: str, error: str | None = None) -> str:
    return f"Task `{task_id}`" + (f" \u00b7 {error}" if error else "")


def _line(emoji: str, head: str, *parts: str) -> str:
    """``emoji *head* · part · ...``, where the event text repeats no leading ``head``."""
    rest = [p.removeprefix(head).lstrip(":;, ") if p.startswith(head) else p for p in parts]
    return " \u00b7 ".join([f"{emoji} *{head}*", *(r for r in rest if r)])


def thread_disk_created(message: str, link: str | None) -> str:
    text = _line(":cd:", "Disk created", message)
    return text + (f"\n<{link}|Open the VM/image>" if link else "")


def thread_next_steps(text: str) -> str:
    return f":point_right: *Next:* {text}"


def thread_hint() -> str:
    return (":information_source: If you see *This system was not shut down properly\u2026*, "
            "log in with a local user, not a domain user.")


def thread_published(message: str, link: str | None, next_steps: str, hint: bool) -> str:
    """One reply for the published disk: the link, the next step and, where a guest is logged
    into, the local-user hint."""
    parts = [thread_disk_created(message, link)]
    if next_steps:
        parts.append(thread_next_steps(next_steps))
    if hint:
        parts.append(thread_hint())
    return "\n".join(parts)


def thread_done(template: str, message: str) -> str:
    return _line(":white_check_mark:", "Done", template, message)


def thread_failed(template: str, message: str, requester: str | None = None,
                  advice: str = "") -> str:
    """``requester``: @mentioned, as the one who can act on it."""
    mention = f"<@{requester}> " if requester else ""
    text = message.removeprefix("Failed: ").rstrip(".")
    return _line(":x:", "Failed", template, mention + text + (f". {advice}" if advice else ""))


def thread_cancelled(template: str, message: str) -> str:
    return _line(":no_entry_sign:", "Cancelled", template, message)


def thread_waiting(message: str, requester: str) -> str:
    return f":point_right: *Action required* \u00b7 <@{requester}> {message}"


def cancel_requested_by(user: str) -> str:
    return f"Cancel requested by <@{user}>"


CANCEL_DIALOG_TITLE = "Cancel this task?"
CANCEL_DIALOG_YES = "Cancel the task"
CANCEL_DIALOG_NO = "Keep it running"


def cancel_dialog(template: str) -> str:
    return (f"Stop publishing {template}? Its runner removes any partial upload, and the channel "
            "sees that you cancelled it.")


def cancelled_by(user: str, finished: bool) -> str:
    return f"Cancelled by <@{user}>" if finished else f"Cancel requested by <@{user}>"


def cancel_ack(task_id: str) -> str:
    return f"Cancel requested for task `{task_id}`; its runner removes any partial upload."


def already_finished(task_id: str, label: str) -> str:
    return f"Task `{task_id}` is already {label.lower()}."


def retried(old: str, user: str) -> str:
    return f"Retry of task {old} requested by <@{user}>"


def too_many(limit: int) -> str:
    return f"At most {limit} templates can be published at once."


def retry_ack(old: str, new: str) -> str:
    return f"Retrying task `{old}` as task `{new}`."


def _task_link(task_id: str, url: str | None) -> str:
    return f"<{url}|task `{task_id}`>" if url else f"task `{task_id}`"


def retried_as(new: str, url: str | None) -> str:
    """On the failed task's message, once Retry was clicked."""
    return f":repeat: Retried as {_task_link(new, url)} \u2192"


def retry_of(old: str, url: str | None) -> str:
    """On the retry's message."""
    return f":leftwards_arrow_with_hook: Retry of {_task_link(old, url)}"


def already_retried(old: str, new: str, url: str | None, label: str) -> str:
    """A second Retry click on the same task."""
    return f"Task `{old}` was already retried as {_task_link(new, url)} ({label.lower()})."


def no_task(task_id: str) -> str:
    return f"There is no task `{task_id}`. `/publish status` lists the latest tasks."


def status_line(task_id: str, template: str, label: str, step: str, percent: float | None,
                link: str | None, *, requester: str, started: float,
                message_link: str | None = None) -> str:
    """One task in a list: id (linking to its task message), template, state, who, when.
    ``step``: ``task_step`` while working, else nothing; ``percent``: the overall progress
    (``None``: not shown, as for a queued or finished task)."""
    ref = f"<{message_link}|`{task_id}`>" if message_link else f"`{task_id}`"
    progress = (f" \u00b7 {step}" if step else "") + (
        f" \u00b7 {percent:.0f}%" if percent is not None else "")
    where = f" \u00b7 <{link}|{BUTTON_OPEN.lower()}>" if link else ""
    return (f"{ref} *{template}* \u2014 {label}{progress} \u00b7 <@{requester}> \u00b7 "
            f"{slack_time(started)}{where}")


def slack_time(epoch: float) -> str:
    """A time each reader sees in their own time zone (``<!date^…>``), UTC where unsupported."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time}}|{fallback}>"


def status_heading(mine: bool, template: str | None = None) -> str:
    if template:
        return f"Latest tasks of *{template}*" + (" you requested" if mine else "")
    return "Your latest tasks" if mine else "Latest tasks you may see"


def unknown_status_word(word: str, guess: str | None) -> str:
    hint = f" (did you mean *{guess}*?)" if guess else ""
    return (f"There is no task or template `{word}`{hint}. `/publish status` lists the latest "
            "tasks, `/publish list` the templates.")


def unknown_template(name: str, guess: str | None) -> str:
    return f"no template named '{name}'" + (f" (did you mean '{guess}'?)" if guess else "")


def list_line(icon: str, name: str, description: str, allowed: bool) -> str:
    lock = "" if allowed else " :lock:"
    return f"{icon} *{name}*{lock}" + (f" \u2014 {description}" if description else "")


def no_status() -> str:
    return "No tasks yet."


def no_status_mine() -> str:
    return "You have no tasks yet. `/publish status all` shows everyone's you may see."


def _images(count: int) -> str:
    return counted(count, "layered image")


def reason_user(kind: str, name: str) -> str:
    return f"the {kind} {name} is restricted to certain users and user groups, and you are not one of them"


def reason_channel(kind: str, name: str, channels: list[str]) -> str:
    where = ", ".join(f"<#{c}>" for c in channels)
    return f"the {kind} {name} may only be published from {where}"


def reason_not_requester(requester: str) -> str:
    return f"only <@{requester}>, who asked for it, may confirm this publish"


def reason_second_person(requester: str) -> str:
    return f"a protected target needs a second person: someone other than <@{requester}> must confirm"


def reason_unknown_template(name: str) -> str:
    return f"the template {name} is no longer in the catalog"


def cannot_prepare(templates: list[str], exc: BaseException, *, reference: str | None) -> str:
    """Planning a publish failed: a PlanError says why in words; anything else is a bug whose
    exception is for the log (``reference``), not for the channel."""
    if reference is not None:
        return (f"Cannot prepare {', '.join(templates)}: layerbot hit an unexpected error "
                f"(reference `{reference}`); ask an admin to look it up in the bot's log.")
    return f"Cannot prepare {', '.join(templates)}: {exc}"


def start_failed(templates: list[str], reference: str, released: bool) -> str:
    """What the clicker reads when starting the confirmed templates failed (a bug: the
    exception is in the log under ``reference``)."""
    then = f"Click *{BUTTON_PUBLISH}* again to retry" if released else "Run `/publish` again"
    return (f":warning: Cannot start {', '.join(templates)}: layerbot hit an unexpected error "
            f"(reference `{reference}`). {then}, or ask an admin to look the reference up in "
            "the bot's log.")
