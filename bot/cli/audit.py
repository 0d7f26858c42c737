"""``layerbot audit``: the audit trail of who asked, confirmed (an approver's confirm is the
approval), dismissed, rejected, cancelled and retried what, in Slack and on the command line,
and what was refused and why."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from bot.cli.json_output import JSON_HELP, emit, iso
from bot.cli.output import escape_markup, out

if TYPE_CHECKING:
    from bot.cli.commands import Context

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"(\d{1,9})([smhdw])")


def parse_since(value: str, now: float) -> float:
    """``2026-12-01`` (UTC midnight), ``2026-12-01T09:30`` (UTC unless it says otherwise) or an
    age (``90s``, ``30m``, ``1h``, ``2d``, ``1w``) as an epoch time; ValueError saying what
    is accepted."""
    if match := _AGO.fullmatch(value.strip()):
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is neither a date (2026-12-01), a UTC time "
                         f"(2026-12-01T09:30) nor an age (30m, 1h, 2d, 1w)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class Since(click.ParamType):
    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_since(str(value), time.time())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def audit_rows(store: Any, since: float | None, user: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` audit rows (at or after ``since``, of ``user``), newest first."""
    where, params = [], []
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if user is not None:
        where.append('"user" = ?')
        params.append(user)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = store.rows('SELECT id, at, "user", action, target, allowed, reason FROM audit'
                      f"{clause} ORDER BY id DESC LIMIT ?", [*params, limit])
    return [{"id": r["id"], "at": iso(r["at"]), "at_epoch": r["at"], "user": r["user"],
             "action": r["action"], "target": r["target"], "allowed": bool(r["allowed"]),
             "reason": r["reason"]} for r in rows]


@click.command()
@click.option("--since", type=Since(), help="only from this date, UTC time or age on: "
              "2026-12-01, 2026-12-01T09:30, 30m, 1h, 2d, 1w")
@click.option("--user", help="only what this user did (a Slack id like U123, or a local login)")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def audit(click_ctx: click.Context, since: float | None, user: str | None, limit: int,
          as_json: bool) -> None:
    """Show the audit trail: who asked, confirmed, cancelled, retried, and what was refused.

    Newest first: Slack's access decisions (publish, confirm, approve (someone else's request), dismiss,
    reject, cancel, retry, status) and the command line's publish confirmations and cancels.

    Example: layerbot audit --since 2d --user U024BE7LH
    """
    ctx: Context = click_ctx.find_root().obj
    rows = audit_rows(ctx.store(must_exist=True), since, user, limit)
    if as_json:
        emit(rows)
        return
    from rich.table import Table

    table = Table("at (UTC)", "user", "action", "target", "outcome", "reason")
    for r in rows:
        outcome = "allowed" if r["allowed"] else "[red]refused[/red]"
        table.add_row((r["at"] or "").replace("T", " ").removesuffix("Z"), escape_markup(r["user"] or ""),
                      r["action"], escape_markup(r["target"] or ""), outcome,
                      escape_markup(r["reason"] or ""))
    out().print(table)
