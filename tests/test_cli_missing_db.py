"""A reading command with a mistyped --db says there is no task database there, creates none."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.commands import main


@pytest.mark.parametrize("command", [["tasks"], ["tasks", "--json"], ["task", "t1a2b3c4d"],
                                     ["task", "t1a2b3c4d", "--json"], ["audit"], ["audit", "--json"],
                                     ["cancel", "t1a2b3c4d"]])
def test_a_missing_database_is_named_not_created(command: list[str], tmp_path: Path) -> None:
    db = tmp_path / "mistyped.db"
    result = CliRunner().invoke(main, ["--db", str(db), *command])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert f"no task database at {db} (nothing published from here yet, or a mistyped --db)" \
        in result.stderr
    assert not db.exists()
