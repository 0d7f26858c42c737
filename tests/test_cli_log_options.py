"""The root options --log-level/--log-format: any case, and after the sub-command too; and
``check --json``'s plan problems name the file like the other stages'."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import adapters
from bot.cli import log_setup
from bot.cli.commands import main


def test_the_log_format_is_case_insensitive(catalog_dir: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "templates"],
                                env={"LAYERBOT_LOG_FORMAT": "JSON", "LAYERBOT_LOG_LEVEL": "DEBUG"})
    assert result.exit_code == 0, result.output
    assert log_setup.settings() == (logging.DEBUG, "json")


def test_log_options_may_follow_the_sub_command(catalog_dir: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "templates",
                                       "--log-level", "debug", "--log-format=json"])
    assert result.exit_code == 0, result.output
    assert log_setup.settings() == (logging.DEBUG, "json")


def test_check_json_plan_problems_name_the_file(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unusable(*_: object, **__: object) -> None:
        raise ValueError("no such thing")

    monkeypatch.setattr(adapters, "create", unusable)
    result = CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "check", "--json"])
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert problems and all(p["stage"] == "plan" for p in problems), problems
    assert all(p["message"].startswith("layerbot.yml: templates.") for p in problems), problems
