"""``--json`` on tasks, task, templates, cache and check: one JSON document on stdout, valid
against docs/cli-json.schema.json, the values those of the store and the catalog."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.store.task_store import TaskStore
from tests.cli_json_schema import SCHEMA, validate
from tests.conftest import BASIC_CATALOG

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
Run = Callable[..., tuple[int, Any]]


@pytest.fixture
def cli_json(catalog_dir: Path, tmp_path: Path) -> Run:
    """`layerbot ARGS --json`: the exit code and the parsed stdout (which must be JSON alone)."""
    def run(*args: str) -> tuple[int, Any]:
        result = CliRunner().invoke(
            main, ["--config", str(catalog_dir / "layerbot.yml"), "--db", str(tmp_path / "t.db"),
                   *args, "--json"], catch_exceptions=False)
        return result.exit_code, json.loads(result.stdout)

    return run


def _same_instant(iso: str | None, epoch: float | None) -> None:
    assert (iso is None) == (epoch is None)
    if iso is not None and epoch is not None:
        assert iso.endswith("Z")
        assert abs(datetime.fromisoformat(iso).timestamp() - epoch) < 1


def test_every_listing_after_a_publish_is_valid_and_matches_the_store(
        cli_json: Run, catalog_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "--db",
                                       str(tmp_path / "t.db"), "publish", "win10-office", "--yes"])
    assert result.exit_code == 0, result.output
    stored = TaskStore(tmp_path / "t.db").list_tasks()[0]

    code, tasks = cli_json("tasks")
    assert code == 0
    validate(tasks, "tasks")
    assert [(t["id"], t["status"], t["link"]) for t in tasks] == [(stored.id, "done", stored.link)]
    _same_instant(tasks[0]["created_at"], tasks[0]["created_epoch"])
    _same_instant(tasks[0]["finished_at"], tasks[0]["finished_epoch"])

    code, task = cli_json("task", stored.id)
    assert code == 0
    validate(task, "task_detail")
    assert task["id"] == stored.id and task["finished"] is True
    kinds = [e["kind"] for e in task["events"]]
    assert kinds[0] == "created" and "disk_created" in kinds and kinds[-1] == "done"

    code, templates = cli_json("templates")
    assert code == 0
    validate(templates, "templates")
    assert templates[0]["name"] == "win10-office"
    assert templates[0]["layers"] == ["base-os", "office", "vda"]
    assert templates[0]["connector_type"] == "local"

    code, cache = cli_json("cache")
    assert code == 0
    validate(cache, "cache")
    assert cache["entries"] and cache["total_bytes"] > 0
    kept = {e["key"] for e in cache["entries"]}

    code, pruned = cli_json("cache", "--prune", "--max-gib", "0")
    assert code == 0
    validate(pruned, "cache_prune")
    # just used: every entry is kept (5 minutes), and the JSON says so
    assert pruned["busy"] == len(kept) and pruned["removed"] == []

    code, check = cli_json("check")
    assert code == 0
    validate(check, "check")
    assert check["ok"] is True and check["templates"] == 1 and check["problems"] == []
    assert {"qemu-img", "mke2fs"} <= {t["name"] for t in check["tools"] if t["found"]}


def test_check_json_names_each_failing_check_and_exits_2(
        cli_json: Run, write_catalog: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalog(BASIC_CATALOG.replace("app_layers: [office]", "app_layers: [ofice]"))
    code, check = cli_json("check")
    assert code == 2
    validate(check, "check")
    assert check["ok"] is False and check["layers"] is None and check["tools"] == []
    assert check["problems"] == [{"stage": "catalog", "message": "layerbot.yml: templates.win10-office"
                                  ".app_layers[0]: no layer named 'ofice' (did you mean 'office'?)"}]

    import adapters

    write_catalog(BASIC_CATALOG)
    with monkeypatch.context() as patched:
        patched.setattr(adapters, "missing_sdk", lambda kind: f"the {kind} connector needs its SDK")
        code, check = cli_json("check")
    assert code == 2
    validate(check, "check")
    assert check["problems"] == [{"stage": "connector_sdk", "message": "layerbot.yml: connectors.folder"
                                  ".type: the local connector needs its SDK"}]

    import compositor.tools

    real_find = compositor.tools.find_tool
    monkeypatch.setattr(compositor.tools, "find_tool",
                        lambda name: None if name == "qemu-img" else real_find(name))
    code, check = cli_json("check")
    assert code == 2
    validate(check, "check")
    assert check["ok"] is False and check["problems"] == []
    assert {"name": "qemu-img", "path": None, "package": "qemu-utils", "found": False} in check["tools"]
    assert check["missing_packages"] == ["qemu-utils"]
    assert check["install_command"] == "sudo apt-get install -y qemu-utils"


def test_the_schema_refuses_what_the_contract_does_not_allow() -> None:
    """The contract can fail: an extra field, a missing one, a local time."""
    good = {"id": 1, "at": "2026-12-01T09:30:00Z", "at_epoch": 1.0, "user": "U1", "action": "cancel",
            "target": "t1", "allowed": True, "reason": "allowed"}
    validate([good], "audit")
    for bad in ({**good, "extra": 1}, {k: v for k, v in good.items() if k != "reason"},
                {**good, "at": "2026-12-01 09:30:00"}, {**good, "allowed": "yes"}):
        with pytest.raises(jsonschema.ValidationError):
            validate([bad], "audit")


def _documented_tables() -> dict[str, list[str]]:
    """docs/cli.md's field tables, by the `$defs` name in the heading above each."""
    tables: dict[str, list[str]] = {}
    current: str | None = None
    for line in DOCS.read_text().splitlines():
        if heading := re.match(r"#+ .*\(`\$defs/(\w+)`\)$", line):
            current = heading.group(1)
        elif current and (row := re.match(r"\| `(\w+)` \|", line)):
            tables.setdefault(current, []).append(row.group(1))
    return tables


def test_the_docs_list_exactly_the_fields_of_the_schema() -> None:
    documented = _documented_tables()
    objects = {name: list(d["properties"]) for name, d in SCHEMA["$defs"].items()
               if d.get("type") == "object"}
    assert documented == objects
    headed = set(re.findall(r"\(`\$defs/(\w+)`\)", DOCS.read_text()))
    assert headed == set(SCHEMA["$defs"])  # the lists too have a section


def test_a_broken_catalog_leaves_stdout_empty_and_says_why_on_stderr(
        catalog_dir: Path, tmp_path: Path, write_catalog: Callable[[str], Path]) -> None:
    write_catalog(BASIC_CATALOG.replace("size_gib: 1", "size_gib: big"))
    for command in ("templates", "cache"):
        result = CliRunner().invoke(main, ["--config", str(catalog_dir / "layerbot.yml"), "--db",
                                           str(tmp_path / "t.db"), command, "--json"])
        assert result.exit_code == 2 and result.stdout == "", command
        assert "layerbot.yml: templates.win10-office.disk.size_gib: " in result.stderr
