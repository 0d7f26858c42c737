"""``layerbot completion bash|zsh|fish`` and the completion callbacks, driven through click's
``_LAYERBOT_COMPLETE`` protocol in a subprocess, as a shell drives them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.store.task_store import TaskStore

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "examples" / "demo" / "layerbot.yml"
_LAYERBOT = "import sys; from bot.cli.commands import main; sys.argv[0] = 'layerbot'; main()"


def complete(words: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """What bash gets on Tab after ``words`` (a trailing space: completing a new word)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    proc = subprocess.run(
        [sys.executable, "-c", _LAYERBOT], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {}), "COMP_WORDS": words, "COMP_CWORD": str(cword),
             "_LAYERBOT_COMPLETE": "bash_complete"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [tuple(line.split(",", 1)) for line in proc.stdout.splitlines() if line]  # type: ignore[misc]


def values(words: str, env: dict[str, str] | None = None) -> list[str]:
    return [value for _, value in complete(words, env)]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_script_of_each_shell_is_generated_and_valid(shell: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["completion", shell])
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert "_LAYERBOT_COMPLETE" in script and f"{shell}_complete" in script
    assert {"bash": "complete -o nosort -F _layerbot_completion layerbot",
            "zsh": "#compdef layerbot",
            "fish": "complete --no-files --command layerbot"}[shell] in script
    if (program := shutil.which(shell)) is not None:
        path = tmp_path / f"layerbot.{shell}"
        path.write_text(script)
        check = subprocess.run([program, "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    else:
        assert shell != "bash", "bash is needed to check the bash script"


def test_an_unknown_shell_is_refused_naming_the_choices() -> None:
    result = CliRunner().invoke(main, ["completion", "tcsh"])
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.output


def test_commands_complete_the_lazy_ones_too() -> None:
    commands = set(values("layerbot "))
    assert {"publish", "task", "cancel", "serve", "db", "vm", "audit", "completion", "schema"} <= commands
    assert values("layerbot comp") == ["completion"]
    assert "--since" in values("layerbot audit --s")  # a lazy command's options resolve


def test_publish_completes_the_template_names_of_the_catalog(tmp_path: Path) -> None:
    assert values(f"layerbot --config {DEMO} publish ") == ["demo-office"]
    two = tmp_path / "layerbot.yml"
    two.write_text("templates:\n  win10-office: {description: Office}\n  win11-cad: {}\n  rhel9: {}\n")
    assert values(f"layerbot --config {two} publish win") == ["win10-office", "win11-cad"]
    # $LAYERBOT_CONFIG when no --config; a name already given is not offered again
    assert values("layerbot publish rhel9 ", {"LAYERBOT_CONFIG": str(two)}) == ["win10-office", "win11-cad"]


def test_a_broken_or_missing_catalog_completes_nothing_silently(tmp_path: Path) -> None:
    path = tmp_path / "layerbot.yml"
    path.write_text("templates:\n  win10-office: {}\n")
    assert values(f"layerbot --config {path} publish ") == ["win10-office"]  # the control
    for broken in ("templates: [a, b]\n", "templates: {a: 1}\n  bad: indent\n", "\x00\xff", None):
        if broken is None:
            path.unlink()
        else:
            path.write_text(broken)
        assert complete(f"layerbot --config {path} publish ") == [], broken


def test_task_and_cancel_complete_recent_task_ids(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = TaskStore(db)
    ids = [store.create_task(template=name, connector="folder", platform="Local folder",
                             image_name=name, requested_by="alice", message="queued")[0].id
           for name in ("win10-office", "rhel9")]
    store.close()
    for command in ("task", "cancel"):
        offered = complete(f"layerbot --db {db} {command} ")
        assert sorted(value for value in offered) == sorted(("plain", i) for i in ids)
    assert values(f"layerbot --db {db} task {ids[0][:4]}") == [i for i in ids if i.startswith(ids[0][:4])]


def test_no_database_completes_nothing_and_creates_none(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    control = tmp_path / "t.db"
    store = TaskStore(control)
    task = store.create_task(template="rhel9", connector="folder", platform="Local folder",
                             image_name="rhel9", requested_by="alice", message="queued")[0]
    store.close()
    assert values(f"layerbot --db {control} task ") == [task.id]
    assert complete(f"layerbot --db {db} task ") == []
    assert not db.exists()
    assert complete("layerbot --db postgresql://nobody@127.0.0.1:1/none cancel ") == []


def test_the_new_commands_help_and_completion_script_import_no_command_library(tmp_path: Path) -> None:
    from tests.test_lazy_imports import COMMAND_LIBRARIES, PLATFORM_SDKS, cli_modules

    for args in (["audit", "--help"], ["schema", "--help"], ["completion", "bash"]):
        modules = cli_modules(tmp_path, *args)
        assert [m for m in modules if m.startswith(PLATFORM_SDKS + COMMAND_LIBRARIES)] == [], args


def test_task_id_completion_gives_up_on_a_postgresql_that_never_answers() -> None:
    pytest.importorskip("psycopg")
    import socket
    import time

    with socket.socket() as blackhole:  # listens, never accepts: the connection hangs after the SYN
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        port = blackhole.getsockname()[1]
        started = time.monotonic()
        found = values("layerbot task ", {"LAYERBOT_DB": f"postgresql://layerbot@127.0.0.1:{port}/layerbot"})
        took = time.monotonic() - started
    assert found == []
    assert took < 20, f"completion took {took:.1f} s"  # libpq's default would wait for ever
