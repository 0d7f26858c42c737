"""Resources taken away from a runner mid-task (issue 18 part 3): each ends in a clear failure
(the task's error says what and where) or a clean resume, never a task stuck in a working
state, and leaves no temp files."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from bot.cli.commands import main
from bot.store import states
from bot.store.task_store import TaskStore
from tests.faults.sites import layerbot, site, temp_files, with_read_only, with_small_cache


def only_task(root: Path) -> tuple[str, str, str | None]:
    store = TaskStore(root / "layerbot.db")
    try:
        [task] = store.list_tasks()
        return task.id, task.status, task.error
    finally:
        store.close()


def shown_by_layerbot_task(root: Path, task_id: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(root / "layerbot.db"), "task", task_id],
                                terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_cache_filling_up_mid_composite_fails_the_task_saying_which_folder(tmp_path: Path) -> None:
    site(tmp_path)
    # 1 MiB: the layers and the sparse raw disk fit, the qcow2 conversion does not
    run = with_small_cache(tmp_path, "1m", layerbot(tmp_path, "publish", "--yes", "desk"))
    assert run.returncode == 1, (run.stdout, run.stderr)
    task_id, status, error = only_task(tmp_path)
    assert status == states.FAILED
    full = re.escape(f"no space left on this machine's disk while converting the disk to qcow2: "
                     f"{tmp_path / 'cache' / 'tmp'} has ")
    assert error is not None and re.fullmatch(full + r"\d MiB free; free some space there and publish again",
                                              error), error
    assert error in shown_by_layerbot_task(tmp_path, task_id)
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []
    assert not (tmp_path / "published").exists() or not any((tmp_path / "published").rglob("*.qcow2"))


def test_a_cache_on_its_own_filesystem_publishes_to_a_folder_on_another(tmp_path: Path) -> None:
    """Not a fault but the set-up of one: the cache on a filesystem of its own (here the 16 MiB
    tmpfs the disk-full test fills) and the target folder on another."""
    site(tmp_path)
    run = with_small_cache(tmp_path, "16m", layerbot(tmp_path, "publish", "--yes", "desk"))
    task_id, status, error = only_task(tmp_path)
    assert (run.returncode, status, error) == (0, states.DONE, None), run.stdout
    published = tmp_path / "published" / "desk" / f"{task_id}.qcow2"
    assert published.read_bytes() == next((tmp_path / "cache-after" / "images").glob("*.qcow2")).read_bytes()
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []


def test_an_unwritable_work_dir_fails_the_task_naming_it(tmp_path: Path) -> None:
    site(tmp_path)
    run = with_read_only(tmp_path, "work", layerbot(tmp_path, "publish", "--yes", "desk"))
    assert run.returncode == 1, (run.stdout, run.stderr)
    task_id, status, error = only_task(tmp_path)
    assert (status, error) == (states.FAILED, (
        f"cannot create a build folder in the work dir {tmp_path / 'work'}: Read-only file system; make it "
        "writable by the user layerbot runs as, or set runner.work_dir in the catalog"))
    assert error in shown_by_layerbot_task(tmp_path, task_id)
    assert "Traceback" not in run.stderr
    assert temp_files(tmp_path / "cache-after", tmp_path / "work") == []
