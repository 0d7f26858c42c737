"""A database written by layerbot 0.1.0 (tests/fixtures/release-0.1.0, made by its own code:
make_fixture.sh) opens with this release, migrates, and its tasks finish: the queued one is
done, the one whose runner died mid-upload is resumed and done, the one waiting for its guest
is done once the guest powers off. A database of a newer release is refused, not guessed at."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path

from click.testing import CliRunner

import adapters
from bot.catalog import load_catalog
from bot.cli.commands import main
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.migrations import LATEST
from bot.store.states import EventKind
from tests.store.workers import leftover_temp_files

adapters.register("fake", "tests.fake_adapter")

FIXTURE = Path(__file__).parent.parent / "fixtures" / "release-0.1.0"
#: (table, column) holding the absolute paths of the installation (resources, links)
PATH_COLUMNS = (("tasks", "resources"), ("tasks", "published"), ("tasks", "link"), ("task_events", "data"))


def installed_release(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The 0.1.0 installation moved to ``tmp_path/site``: its paths rewritten as an operator
    moving the directory would; returns it and the fixture's task ids by state."""
    meta = json.loads((FIXTURE / "tasks.json").read_text())
    site = tmp_path / "site"
    shutil.copytree(FIXTURE, site, ignore=shutil.ignore_patterns("make_fixture.*", "tasks.json"))
    db = sqlite3.connect(site / "layerbot.db")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    assert version < LATEST, f"the fixture is at schema {version}, not older than this release's"
    with db:
        for table, column in PATH_COLUMNS:
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", [meta["root"], str(site)])
    db.close()
    return site, {k: v for k, v in meta.items() if k != "root"}


async def until(store: Store, task_id: str, status: str, work: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 120
    while (current := store.get(task_id).status) != status:
        assert not work.done(), (task_id, current, work)
        assert time.monotonic() < deadline, (task_id, current)
        await asyncio.sleep(0.05)


def count(store: Store, task_id: str, kind: EventKind) -> int:
    return sum(1 for e in store.events(task_id) if e.kind == kind)


async def test_a_database_of_release_0_1_0_migrates_and_its_tasks_finish(tmp_path: Path) -> None:
    site, ids = installed_release(tmp_path)
    store = open_store(str(site / "layerbot.db"))  # applies the migrations 0.1.0 did not have
    try:
        assert store.schema_version() == LATEST
        assert {k: store.get(i).status for k, i in ids.items()} == {
            "waiting": states.ACTION_REQUIRED, "uploading": states.UPLOADING, "queued": states.QUEUED}
        vms = {k: Path(store.get(ids[k]).resources[0]["path"]) for k in ("waiting", "uploading")}
        assert all(vm.parent == site / "vms" for vm in vms.values())
        runner = JobRunner(store, load_catalog(site / "layerbot.yml"), poll_interval=0.05)
        work = asyncio.create_task(runner.run(only=list(ids.values()), until_done=True))
        await until(store, ids["queued"], states.DONE, work)
        await until(store, ids["uploading"], states.ACTION_REQUIRED, work)
        assert store.get(ids["waiting"]).status == states.ACTION_REQUIRED  # its guest is still on
        for vm in vms.values():
            vm.with_name(vm.name + ".off").touch()
        await asyncio.wait_for(work, 120)
        tasks = {k: store.get(i) for k, i in ids.items()}
        assert {k: t.status for k, t in tasks.items()} == dict.fromkeys(ids, states.DONE), \
            {k: t.error for k, t in tasks.items()}
        assert all(count(store, i, EventKind.DONE) == 1 for i in ids.values())
        assert any(e.kind == EventKind.RESUMED and "(attempt 2)" in e.message
                   for e in store.events(ids["uploading"]))
        assert count(store, ids["waiting"], EventKind.DISK_CREATED) == 1  # not created again
        assert sorted(p.name for p in (site / "vms").glob("*.vm")) == sorted(vm.name for vm in vms.values())
        assert [p.relative_to(site).as_posix() for p in (site / "published").rglob("*") if p.is_file()] \
            == [f"published/desk/{ids['queued']}.img"]
        assert leftover_temp_files(site) == []
    finally:
        store.close()


def test_a_database_of_a_newer_release_is_refused_by_every_command(tmp_path: Path) -> None:
    site, _ = installed_release(tmp_path)
    db = site / "layerbot.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    for args in (["tasks"], ["--config", str(site / "layerbot.yml"), "worker"]):
        result = CliRunner().invoke(main, ["--db", str(db), *args], terminal_width=200)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert f"{db}: the task database has schema version {LATEST + 1}, newer than this layerbot " \
               f"knows ({LATEST}); upgrade layerbot on this machine" in result.output, (args, result.output)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (LATEST + 1,)
    conn.close()
