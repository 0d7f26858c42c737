"""Render one text version of each Slack message kind, built by the app's real block builders
(bot/slack/blocks.py) from sample data, for docs/slack.md.

    python scripts/render_messages.py           # print the section
    python scripts/render_messages.py --write   # replace it in docs/slack.md

The section sits between the two marker comments below; tests/slack/test_slack_render_docs.py
checks that the committed one equals this script's output, so the docs never drift.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import messages  # noqa: E402
from bot.runner.planning import PublishPlan  # noqa: E402
from bot.slack import blocks as sb  # noqa: E402
from bot.store import states  # noqa: E402
from bot.store.model import Event, Task  # noqa: E402
from bot.store.states import EventKind  # noqa: E402

DOC = ROOT / "docs" / "slack.md"
README = ROOT / "README.md"
BEGIN = "<!-- render_messages.py: begin (generated; run scripts/render_messages.py --write) -->"
END = "<!-- render_messages.py: end -->"
STARTED = 1_700_000_000.0
WORKSPACE = "https://example.slack.com/"

PLAN = PublishPlan(template="win10-office", icon=":computer:", description="Windows 10 with Office",
                   os_layer="win10-os", app_layers=["office", "teams"], platform_layer="vda",
                   connector="folder", platform="Local folder", size_gib=40, filesystem="ntfs",
                   disk_format="vhdx", scripts=["kmssetup.cmd"], cache_hit=False)


def task(status: str, **fields: Any) -> Task:
    base: dict[str, Any] = dict(
        id="t1a2b3c4d", template="win10-office", connector="folder", platform="Local folder",
        status=status, stage="Uploading to Local folder", progress=62.0, requested_by="UALICE",
        channel="COPS", message_ts="1700000000.000100", thread_ts="1700000000.000100",
        idempotency_key=None, link=None, error=None, created_at=STARTED, updated_at=STARTED + 95,
        finished_at=None, image_name="win10-office-20231114", lease_owner=None, lease_until=0.0,
        cancel_requested=0, attempts=1, resources=[], published=None)
    return Task(**{**base, **fields})


def event(kind: EventKind, message: str, **data: Any) -> Event:
    return Event(id=1, task_id="t1a2b3c4d", at=STARTED + 90, kind=kind, message=message, data=data)


DONE = task(states.DONE, stage="Done", progress=100.0, finished_at=STARTED + 95,
            link="https://vcenter.example/ui/vm-42")
FAILED = task(states.FAILED, stage="Uploading to Local folder",
              error="no space left in /srv/images")
CANCELLED = task(states.CANCELLED, stage="Cancelled", finished_at=STARTED + 40)


def kinds() -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(title, the payload or view as Slack receives it), in the order a user meets them."""
    tasks = [DONE, task(states.UPLOADING, id="t5e6f7a8b", requested_by="UBOB",
                        message_ts="1700000100.000200", created_at=STARTED + 100)]
    return [
        ("The publish dialog (`/publish` alone)", lambda: sb.publish_modal(
            [("win10-office", "Windows 10 with Office"), ("secret-os", "")], "COPS",
            frozenset({"secret-os"})).to_dict()),
        ("Its confirm step", lambda: sb.modal_step(sb.confirm_card(
            [PLAN], "i0123", "UALICE", second_person=False, ttl_minutes=15), "COPS").to_dict()),
        ("The confirm card (`/publish win10-office`)", lambda: sb.confirm_card(
            [PLAN], "i0123", "UALICE", second_person=False, ttl_minutes=15).payload()),
        ("The approval card on a target that needs a second person", lambda: sb.approval_card(
            [PLAN], "i0123", "UALICE", approvers=["<@UCAROL>", "<!subteam^S0OPS>"],
            expires_at=STARTED + 900).payload()),
        ("The approval card once rejected", lambda: sb.text_message(messages.approval_rejected(
            "UCAROL", "UALICE", ["win10-office"])).payload()),
        ("The approval card once expired", lambda: sb.text_message(messages.approval_expired(
            "UALICE", ["win10-office"])).payload()),
        ("The card once published, with a link to each task message", lambda: sb.publishing_message(
            messages.publishing(1, "UALICE"),
            [("win10-office", "https://example.slack.com/archives/COPS/p1700000000000100")]).payload()),
        ("The task message, running", lambda: sb.task_message(task(states.UPLOADING)).payload()),
        ("The task message, done", lambda: sb.task_message(DONE).payload()),
        ("The task message, failed", lambda: sb.task_message(FAILED).payload()),
        ("Thread reply: disk created (with the next step and, on a VM target, the hint)",
         lambda: _reply(DONE, event(
             EventKind.DISK_CREATED, "Disk created: VM win10-office-20231114 (powered off)",
             next_steps="Start the VM; it runs its scripts and shuts down.", guest_login=True))),
        ("Thread reply: cancelled", lambda: sb.thread_reply(CANCELLED, event(
            EventKind.CANCELLED, "Cancelled"), cancelled_by="UCAROL").payload()),  # type: ignore[union-attr]
        ("Thread reply: action required", lambda: _reply(task(states.ACTION_REQUIRED), event(
            EventKind.WAITING, "Start the VM: it runs its scripts and shuts down."))),
        ("Thread reply: done", lambda: _reply(DONE, event(EventKind.DONE, "Done in 1 min 35 s"))),
        ("Thread reply: failed", lambda: _reply(FAILED, event(
            EventKind.FAILED, "Failed: no space left in /srv/images"))),
        ("`/publish status`", lambda: sb.status_message(
            tasks, "Latest tasks you may see", WORKSPACE).payload()),
        ("`/publish list`", lambda: sb.list_message(
            [("win10-office", ":computer:", "Windows 10 with Office", True),
             ("secret-os", ":desktop_computer:", "", False)]).payload()),
        ("App Home", lambda: sb.home_view(
            [("win10-office", ":computer:", "Windows 10 with Office")], tasks,
            workspace_url=WORKSPACE).to_dict()),
    ]


def _reply(t: Task, e: Event) -> dict[str, Any]:
    message = sb.thread_reply(t, e)
    assert message is not None, e.kind
    return message.payload()


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return str(obj or "")


def _button(element: dict[str, Any]) -> str:
    style = {"primary": " (green)", "danger": " (red)"}.get(element.get("style", ""), "")
    confirm = " (asks to confirm)" if element.get("confirm") else ""
    return f"[{_text(element.get('text'))}]{style}{confirm}"


def render_block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return [f"## {_text(block['text'])}"]
    if kind == "divider":
        return ["----"]
    if kind == "context":
        return ["  " + "  ".join(_text(e) for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_button(e) for e in block.get("elements", []))]
    if kind == "input":
        element = block.get("element", {})
        options = [_text(o["text"]) + (f" ({_text(o['description'])})" if o.get("description") else "")
                   for o in element.get("options", [])]
        return [f"{_text(block.get('label'))}: <{_text(element.get('placeholder'))}>",
                *(f"  - {o}" for o in options)]
    lines = _text(block.get("text")).splitlines() if block.get("text") else []
    for field in block.get("fields") or []:
        lines += _text(field).splitlines()
    if block.get("accessory"):
        lines[-1:] = [(lines[-1] if lines else "") + "  " + _button(block["accessory"])]
    return lines


USERS = {"UALICE": "alice", "UBOB": "bob"}


def shown(mrkdwn: str) -> str:
    """What Slack displays for mrkdwn: names for mentions, the text of links, the fallback of
    ``<!date^…>`` (Slack shows it in the reader's time zone)."""
    text = re.sub(r"<@(\w+)>", lambda m: "@" + USERS.get(m[1], m[1]), mrkdwn)
    text = re.sub(r"<#(\w+)>", r"#\1", text)
    text = re.sub(r"<![^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<[^|>]+\|([^>]*)>", r"\1", text)
    return html.unescape(text)


def render(payload: dict[str, Any]) -> str:
    """Block Kit (a message payload or a view) as text; a message's ``text`` fallback last."""
    lines: list[str] = []
    if payload.get("type") in ("modal", "home"):
        lines.append(f"[{payload['type']}] {_text(payload.get('title'))}".rstrip())
    for block in payload.get("blocks", []):
        lines += render_block(block)
    if payload.get("submit") or payload.get("close"):
        lines.append(" ".join(f"[{_text(payload[k])}]" for k in ("close", "submit") if payload.get(k)))
    body = shown("\n".join(lines))
    if "text" in payload and payload.get("type") is None and shown(payload["text"]) not in body:
        body += f"\n(notification: {shown(payload['text'])})"
    return body


#: the kinds README.md shows (what a channel sees of one publish); docs/slack.md shows all
README_KINDS = ("The task message, running", "The task message, done",
                "Thread reply: disk created (with the next step and, on a VM target, the hint)",
                "Thread reply: done", "Thread reply: failed")


def section(only: tuple[str, ...] | None = None) -> str:
    parts = [BEGIN, ""]
    # a running task's message says how long it has run: rendered at a fixed moment, so the
    # section does not change with the clock
    with mock.patch.object(sb.time, "time", return_value=STARTED + 100):
        for title, build in kinds():
            if only is None or title in only:
                parts += [f"**{title}**", "", "```text", render(build()), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def replaced(doc: str, new: str) -> str:
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the markers {BEGIN!r} and {END!r} are missing")
    return doc[:start] + new + doc[end + len(END):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"replace the sections in {DOC} and {README}")
    parser.add_argument("--readme", action="store_true", help="print README.md's section")
    args = parser.parse_args()
    if args.write:
        DOC.write_text(replaced(DOC.read_text(), section()))
        README.write_text(replaced(README.read_text(), section(README_KINDS)))
    else:
        print(section(README_KINDS if args.readme else None))


if __name__ == "__main__":
    main()
