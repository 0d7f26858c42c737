"""``layerbot audit``: the audit trail (Slack's access decisions and the command line's
confirmations and cancels), filtered by time and user, as a table or JSON; and ``--version``."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bot.cli.audit import parse_since
from bot.cli.commands import main
from bot.store.task_store import TaskStore
from tests.cli_json_schema import validate

Run = Callable[..., Result]


@pytest.fixture
def cli(catalog_dir: Path, tmp_path: Path) -> Run:
    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "--db",
                                         str(tmp_path / "t.db"), *args],
                                  input=input, catch_exceptions=False, terminal_width=200)

    return run


def audit_json(cli: Run, *args: str) -> list[dict[str, Any]]:
    result = cli("audit", *args, "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    validate(rows, "audit")
    return rows


def _actions(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool, str]]:
    return [(r["action"], r["target"], r["allowed"], r["reason"]) for r in rows]


def test_the_command_lines_confirm_dismiss_and_cancel_are_audited(cli: Run, tmp_path: Path) -> None:
    assert cli("publish", "win10-office", input="n\n").exit_code == 0
    assert cli("publish", "win10-office", "--yes", "--no-run").exit_code == 0
    task_id = TaskStore(tmp_path / "t.db").list_tasks()[0].id
    assert cli("cancel", task_id).exit_code == 0
    assert cli("cancel", task_id).exit_code == 0  # cancelled already: refused, and audited so
    rows = audit_json(cli)
    assert _actions(rows) == [  # newest first
        ("cancel", task_id, False, "the task is cancelled"),
        ("cancel", task_id, True, "command line"),
        ("confirm", "win10-office", True, "command line (--yes)"),
        ("dismiss", "win10-office", True, "command line"),
    ]
    assert {r["user"] for r in rows} == {getpass.getuser()}


def test_since_and_user_filter_the_slack_decisions_too(cli: Run, tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.audit("U0ALICE", "publish", "win10-office", True, "allowed")
    store.audit("U0BOB", "confirm", "win10-office", False, "the requester cannot approve their own request")
    store.audit("U0ALICE", "retry", "t00000001", True, "allowed")
    week_ago = time.time() - 7 * 86400
    store.execute("UPDATE audit SET at = ? WHERE action = 'publish'", [week_ago])
    store.close()

    assert [r["action"] for r in audit_json(cli)] == ["retry", "confirm", "publish"]
    assert [r["action"] for r in audit_json(cli, "--since", "2d")] == ["retry", "confirm"]
    assert [r["action"] for r in audit_json(cli, "--user", "U0ALICE")] == ["retry", "publish"]
    assert [r["action"] for r in audit_json(cli, "--user", "U0ALICE", "--since", "1d")] == ["retry"]
    day = datetime.fromtimestamp(week_ago, UTC).strftime("%Y-%m-%d")
    assert len(audit_json(cli, "--since", day)) == 3
    assert [r["action"] for r in audit_json(cli, "--limit", "1")] == ["retry"]
    publish = audit_json(cli, "--user", "U0ALICE")[1]
    assert abs(datetime.fromisoformat(publish["at"]).timestamp() - week_ago) < 1

    table = cli("audit").output
    assert "U0BOB" in table and "refused" in table and "the requester cannot approve" in table


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC).timestamp()),
    ("2026-12-01T09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()),
    ("2026-12-01T09:30+01:00", datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()),
    ("90s", 1_000_000.0 - 90), ("30m", 1_000_000.0 - 1800), ("1h", 1_000_000.0 - 3600),
    ("2d", 1_000_000.0 - 2 * 86400), ("1w", 1_000_000.0 - 7 * 86400),
])
def test_since_reads_dates_times_and_ages(value: str, expected: float) -> None:
    assert parse_since(value, now=1_000_000.0) == expected


def test_a_since_that_is_no_time_is_a_usage_error_naming_it(cli: Run) -> None:
    result = cli("audit", "--since", "yesterday")
    assert result.exit_code == 2
    assert "'yesterday' is neither a date (2026-12-01)" in result.output and "--since" in result.output


def test_version_is_the_installed_packages() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"layerbot, version {version('layerbot')}\n"
