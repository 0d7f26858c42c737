"""The CLI edge: same messages as Slack, exit codes, listings."""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot import messages
from bot.catalog import Catalog
from bot.cli.commands import detach_lines, main
from bot.runner.planning import plan
from bot.store import states
from bot.store.task_store import TaskStore
from tests.compositor.layer_builder import (
    claims_a_tebibyte,
    corrupt_sparse_map,
    extended_header_bomb,
    many_empty_files,
)
from tests.conftest import BASIC_CATALOG


@pytest.fixture
def cli(catalog_dir: Path, tmp_path: Path) -> Callable[..., tuple[int, str]]:
    def run(*args: str, input: str | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(
            main, ["--config", str(catalog_dir / "layerbot.yml"), "--db", str(tmp_path / "t.db"),
                   *args], input=input, catch_exceptions=False, terminal_width=200)
        return result.exit_code, result.output

    return run


def test_publish_shows_the_plan_runs_to_done_and_lists(cli: Callable[..., tuple[int, str]],
                                                       tmp_path: Path) -> None:
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 0, out
    for text in ("Review and publish: 1 layered image\n", "base-os", "office", "vda", "folder (Local folder)",
                 "1 GiB ext4, qcow2", "setup.sh", "no, will composite", "Disk created",
                 "Done in"):
        assert text in out, text
    assert messages.LOCAL_USER_HINT[:40] not in out  # a file in a folder: no guest logged into
    task = TaskStore(tmp_path / "t.db").list_tasks()[0]
    code, out = cli("tasks")
    assert code == 0 and task.id in out and "Done" in out
    code, out = cli("task", task.id)
    assert code == 0 and "disk_created" in out and "done" in out
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 0 and "yes, reused" in out and "cache hit" in out


def test_declining_the_confirmation_queues_nothing(cli: Callable[..., tuple[int, str]],
                                                   tmp_path: Path) -> None:
    code, out = cli("publish", "win10-office", input="n\n")
    assert code == 0 and "nothing was queued" in out
    assert TaskStore(tmp_path / "t.db").list_tasks() == []


def test_unknown_template_is_a_usage_error(cli: Callable[..., tuple[int, str]]) -> None:
    code, out = cli("publish", "win10-ofice", "--yes")
    assert code == 2
    assert "no template named 'win10-ofice' (did you mean 'win10-office'?)" in out


def test_bad_config_exits_2_with_every_problem(cli: Callable[..., tuple[int, str]],
                                               write_catalog: Callable[[str], Path]) -> None:
    write_catalog(BASIC_CATALOG.replace("app_layers: [office]", "app_layers: [ofice]"))
    code, out = cli("templates")
    assert code == 2
    assert "layerbot.yml: templates.win10-office.app_layers[0]: no layer named 'ofice'" in out


def test_failed_task_exits_1(cli: Callable[..., tuple[int, str]], catalog_dir: Path) -> None:
    # a layer archive that tries to escape the work directory fails the publish
    with tarfile.open(catalog_dir / "layers" / "vda.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 1, out
    assert "Failed: " in out and "escape.txt" in out


def test_cancel_a_queued_task(cli: Callable[..., tuple[int, str]], tmp_path: Path) -> None:
    code, out = cli("publish", "win10-office", "--yes", "--no-run")
    assert code == 0
    task = TaskStore(tmp_path / "t.db").list_tasks()[0]
    code, out = cli("cancel", task.id)
    assert code == 0 and "Cancelled" in out
    code, out = cli("tasks", "--status", "cancelled")
    assert task.id in out


def test_check_finds_the_tools(cli: Callable[..., tuple[int, str]]) -> None:
    code, out = cli("check")
    assert code == 0, out
    assert "qemu-img" in out and "mke2fs" in out


def test_every_command_documents_an_example() -> None:
    for name, command in main.commands.items():
        assert "Example:" in (command.help or ""), f"layerbot {name} --help has no example"


def test_unusable_database_and_unknown_task_are_usage_errors(catalog_dir: Path) -> None:
    result = CliRunner().invoke(main, ["--db", "/nonexistent/dir/x.db", "--config",
                                       str(catalog_dir / "layerbot.yml"), "publish", "--no-run", "--yes",
                                       "win10-office"])
    assert result.exit_code == 2
    assert "cannot open the task database /nonexistent/dir/x.db" in result.output
    TaskStore(catalog_dir / "t.db").close()
    result = CliRunner().invoke(main, ["--db", str(catalog_dir / "t.db"), "task", "tnope"])
    assert result.exit_code == 2 and "no task with id 'tnope'" in result.output


def test_check_reports_a_tar_layer_that_is_no_archive(cli: Callable[..., tuple[int, str]],
                                                        catalog_dir: Path) -> None:
    bad = catalog_dir / "layers" / "vda.tar.gz"
    bad.write_bytes(b"this is not an archive\n" * 40)
    code, out = cli("check")
    assert code == 2, out
    assert (f"error: layerbot.yml: layers.vda.source: layer 'vda' ({bad}): "
            "cannot read the archive: ") in out
    assert ": ok" not in out


def test_detach_message_tells_each_task_state(cli: Callable[..., tuple[int, str]],
                                              tmp_path: Path) -> None:
    cli("publish", "win10-office", "--yes", "--no-run")
    task = TaskStore(tmp_path / "t.db").list_tasks()[0]
    lines = detach_lines([dataclasses.replace(task, id=f"t{s}", status=s) for s in states.ALL])
    assert lines[0] == "Detached: this command stopped following the tasks."
    assert lines[1:8] == [
        "  tqueued win10-office: Queued (not started yet)",
        "  tcompositing win10-office: Running (stopped while compositing; the next runner "
        "composites it again)",
        "  tuploading win10-office: Running (stopped while uploading; the next runner removes "
        "any partial upload and carries on)",
        "  taction_required win10-office: Action required (published, waiting for the guest to "
        "run its scripts and power off; the next runner goes on watching)",
        "  tdone win10-office: Done (finished)",
        "  tfailed win10-office: Failed (finished)",
        "  tcancelled win10-office: Cancelled (finished)",
    ]
    assert lines[8].startswith("Another runner (layerbot worker, or layerbot serve) carries "
                               "them on;")
    assert "layerbot cancel tqueued" in lines[8]
    done = detach_lines([dataclasses.replace(task, status=states.DONE)])
    assert len(done) == 2 and "Another runner" not in "".join(done)


def test_ctrl_c_while_waiting_for_the_guest(cli: Callable[..., tuple[int, str]],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during `publish` (simulated: the follower raises KeyboardInterrupt once the task
    reached Action required) says so, not that the task is still queued."""

    async def interrupted(store: TaskStore, runner: object, ids: list[str]) -> None:
        (task_id,) = ids
        assert store.claim("me", 30, ids) is not None
        for status in (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED):
            store.update(task_id, "me", status=status)
        store.release(task_id, "me")
        raise KeyboardInterrupt

    monkeypatch.setattr("bot.cli.commands._watch", interrupted)
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 1, out
    task = TaskStore(tmp_path / "t.db").list_tasks()[0]
    assert f"{task.id} win10-office: Action required (published, waiting for the guest" in out
    assert "carries it on" in out and "stay queued" not in out


def test_config_and_db_default_to_the_environment(catalog_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no layerbot.yml here
    db = tmp_path / "from-env.db"
    env = {"LAYERBOT_CONFIG": str(catalog_dir / "layerbot.yml"), "LAYERBOT_DB": str(db)}
    runner = CliRunner()
    result = runner.invoke(main, ["templates"], env=env, terminal_width=200)
    assert result.exit_code == 0 and "win10-office" in result.output, result.output
    result = runner.invoke(main, ["publish", "win10-office", "--yes", "--no-run"], env=env)
    assert result.exit_code == 0, result.output
    (task,) = TaskStore(db).list_tasks()
    result = runner.invoke(main, ["tasks"], env=env, terminal_width=200)
    assert result.exit_code == 0 and task.id in result.output
    assert list(elsewhere.iterdir()) == []  # nothing fell back to ./layerbot.db
    # the options win over the environment
    result = runner.invoke(main, ["--config", str(elsewhere / "none.yml"), "templates"], env=env)
    assert result.exit_code == 2 and "none.yml: cannot read" in result.output
    TaskStore(tmp_path / "other.db").close()
    result = runner.invoke(main, ["--db", str(tmp_path / "other.db"), "tasks"], env=env,
                           terminal_width=200)
    assert result.exit_code == 0 and task.id not in result.output


def test_check_with_a_required_tool_missing_gives_the_install_command(
        cli: Callable[..., tuple[int, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    import compositor.tools

    real_find = compositor.tools.find_tool
    monkeypatch.setattr(compositor.tools, "find_tool",
                        lambda name: None if name == "qemu-img" else real_find(name))
    code, out = cli("check")
    assert code == 2, out
    assert re.search(r"^  qemu-img +missing$", out, re.M), out
    assert "missing tools: install with: sudo apt-get install -y qemu-utils" in out


def test_unreadable_catalogs_exit_2_naming_the_file_and_line(
        cli: Callable[..., tuple[int, str]], catalog_dir: Path) -> None:
    from tests.test_catalog_input import ALIAS_BOMB

    path = catalog_dir / "layerbot.yml"
    cases = [
        (BASIC_CATALOG.encode("utf-16"), "error: layerbot.yml:1: the file is UTF-16 text"),
        (BASIC_CATALOG.replace("templates:\n", "templates:\n  ? [a, b]\n  : {}\n").encode(),
         "error: layerbot.yml:12: templates: a key must be a name, not a list"),
        (BASIC_CATALOG.encode() + b"extras: " + b"[" * 5000 + b"]" * 5000 + b"\n",
         "error: layerbot.yml:23: "),
        (ALIAS_BOMB.encode(), ("the alias *a4 takes the values repeated by aliases past 100000 "
          "(a YAML alias bomb?)")),
    ]
    for data, message in cases:
        path.write_bytes(data)
        for command in (["check"], ["templates"], ["publish", "win10-office", "--yes"]):
            code, out = cli(*command)
            assert code == 2 and message in out, (command, out)
    with path.open("ab") as file:
        file.truncate(40 << 20)
    code, out = cli("check")
    assert code == 2 and "this file is 40 MiB" in out, out


def test_names_yaml_reads_as_other_types_or_paths_exit_2(
        cli: Callable[..., tuple[int, str]], write_catalog: Callable[[str], Path],
        catalog_dir: Path) -> None:
    write_catalog(BASIC_CATALOG.replace("  win10-office:", "  on:"))
    for command in (["check"], ["templates"], ["publish", "on", "--yes"]):
        code, out = cli(*command)
        assert code == 2, (command, out)
        assert "error: layerbot.yml:12: templates.True: names must be strings matching " \
               "[a-z0-9][a-z0-9._-]{0,62}; YAML read this one as a boolean" in out, out
    write_catalog(BASIC_CATALOG.replace("  win10-office:", "  ../../escape-tpl:"))
    for command in (["check"], ["publish", "../../escape-tpl", "--yes"]):
        code, out = cli(*command)
        assert code == 2 and "templates.../../escape-tpl: names must be strings matching" in out
    assert not (catalog_dir / "escape-tpl").exists() and not (catalog_dir.parent / "escape-tpl").exists()


def test_an_empty_catalog_exits_2_with_an_example(cli: Callable[..., tuple[int, str]],
                                                  write_catalog: Callable[[str], Path]) -> None:
    write_catalog("")
    code, out = cli("check")
    assert code == 2
    assert "error: layerbot.yml: templates: none, so there is nothing to publish" in out
    assert "  base: {os_layer: base-os, connector: folder, disk: {size_gib: 4}}" in out


def test_errors_and_events_with_brackets_are_shown_whole(cli: Callable[..., tuple[int, str]],
                                                        tmp_path: Path) -> None:
    # rich reads "[vsphere]" as a style tag and would drop it from the install hint
    cli("publish", "win10-office", "--yes", "--no-run")
    store = TaskStore(tmp_path / "t.db")
    task = store.list_tasks()[0]
    hint = "install it: pip install 'layerbot[vsphere]'"
    store.update(task.id, None, status=states.FAILED, error=hint, event=("failed", hint))
    code, out = cli("task", task.id)
    assert code == 0 and out.count("layerbot[vsphere]") == 2, out
    code, out = cli("tasks")
    assert "layerbot[vsphere]" in out.replace("\n", ""), out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("layer", "file_name", "problem"), [
    ("base-os", "os.tar", "the archive ends inside this member (its header says 1099511627776 bytes)"),
    ("vda", "vda.tar.gz", "the layers need more than 1048577 MiB but a 1 GiB disk holds at most"),
])
def test_check_reads_every_header_of_a_tar_layer(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path, layer: str, file_name: str,
    problem: str,
) -> None:
    """A few KB whose third header claims 1 TiB: a plain tar is seen to end inside it; a
    gzip one is read until its header alone is more than the template's 1 GiB disk holds."""
    claims_a_tebibyte(catalog_dir / "layers" / file_name)
    code, out = cli("check")
    assert code == 2, out
    assert f"error: layerbot.yml: layers.{layer}.source: layer '{layer}'" in out
    assert f"member 'var/huge.img': {problem}" in out
    assert ": ok" not in out


def test_check_adds_up_each_templates_tar_layers(cli: Callable[..., tuple[int, str]],
                                                 catalog_dir: Path) -> None:
    """Each layer fits the 1 GiB disk alone (plain tars: headers only, their data a hole);
    together they do not."""
    for name in ("os.tar", "vda.tar.gz"):
        path = catalog_dir / "layers" / name
        with open(path, "wb") as fh:
            info = tarfile.TarInfo("var/big.bin")
            info.size = 600 << 20
            fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
            fh.truncate(512 + info.size + 1024)
        if name == "vda.tar.gz":
            path.rename(catalog_dir / "layers" / "vda.tar")
    text = (catalog_dir / "layerbot.yml").read_text().replace("vda.tar.gz", "vda.tar")
    (catalog_dir / "layerbot.yml").write_text(text)
    code, out = cli("check")
    assert code == 2, out
    assert ("error: layerbot.yml: templates.win10-office.disk.size_gib: layers base-os, vda: "
            "the layers need about 1201 MiB but a 1 GiB disk holds at most 980 MiB") in out


@pytest.mark.timeout(120)
def test_publish_of_a_layer_claiming_a_tebibyte_fails_fast(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path
) -> None:
    claims_a_tebibyte(catalog_dir / "layers" / "vda.tar.gz")
    started = time.monotonic()
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 1, out
    assert "layer 'vda'" in out and "member 'var/huge.img'" in out, out
    assert time.monotonic() - started < 60


@pytest.mark.timeout(60)
def test_check_and_publish_refuse_a_long_name_bomb_at_once(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path
) -> None:
    """A 270 KB gzip whose GNU long-name header claims 256 MiB (tarfile would read it whole)."""
    extended_header_bomb(catalog_dir / "layers" / "vda.tar.gz", b"L", 256 << 20)
    problem = ("layer 'vda' ({}): cannot read the archive: an extended header of 268435456 bytes "
               "(a GNU long name, at byte 0 of the tar)").format(catalog_dir / "layers" / "vda.tar.gz")
    started = time.monotonic()
    code, out = cli("check")
    assert code == 2, out
    assert f"error: layerbot.yml: layers.vda.source: {problem}" in out, out
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 1, out
    assert problem in out, out
    assert time.monotonic() - started < 30


def test_check_and_publish_report_a_corrupt_sparse_map(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path
) -> None:
    corrupt_sparse_map(catalog_dir / "layers" / "os.tar")
    problem = "GNU.sparse.map='abc,def' is not a list of numbers"
    code, out = cli("check")
    assert code == 2, out
    assert "error: layerbot.yml: layers.base-os.source: layer 'base-os' (" in out, out
    assert problem in out and "Traceback" not in out
    code, out = cli("publish", "win10-office", "--yes")
    assert code == 1, out
    assert "layer 'base-os'" in out and problem in out, out


def test_check_of_a_source_path_too_long_exits_2_with_its_key(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path
) -> None:
    text = (catalog_dir / "layerbot.yml").read_text()
    (catalog_dir / "layerbot.yml").write_text(text.replace("layers/os.tar", "x" * 5000))
    code, out = cli("check")
    assert code == 2, out
    assert ("error: layerbot.yml: layers.base-os.source: cannot look at this path: File name "
            "too long") in out, out


def test_check_counts_the_entries_a_disk_has_inodes_for(
    cli: Callable[..., tuple[int, str]], catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty file costs 256 bytes of the byte count; the entry count stops it (here a disk
    of 2,000 inodes, to keep the test small)."""
    monkeypatch.setattr("compositor.budget.disk_entries", lambda size_gib: 2000)
    many_empty_files(catalog_dir / "layers" / "vda.tar.gz", 5000)
    code, out = cli("check")
    assert code == 2, out
    assert ("error: layerbot.yml: layers.vda.source: layer 'vda', member 'd2/f0002000': the layers "
            "have more than 2000 entries (files, directories, links) but a 1 GiB disk holds at "
            "most 2000 files; choose a bigger disk") in out, out


def test_planning_reads_no_layer_that_was_never_built(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cached image can exist for layers never composited: the plan does not look into
    them (a big tar layer's index is a whole read)."""
    looked: list[object] = []
    monkeypatch.setattr("bot.runner.planning.image_spec", lambda *args: looked.append(args))
    assert plan(catalog, "win10-office").cache_hit is False
    assert looked == []


def test_task_shows_an_event_kind_of_a_newer_layerbot_as_it_is(cli: Callable[..., tuple[int, str]],
                                                              tmp_path: Path) -> None:
    code, out = cli("publish", "win10-office", "--yes", "--no-run")
    assert code == 0, out
    store = TaskStore(tmp_path / "t.db")
    task = store.list_tasks()[0]
    store.db.execute("INSERT INTO task_events (task_id, at, kind, message, data)"
                     " VALUES (?, 0, 'snapshot_taken', 'Snapshot s1 taken', '{}')", [task.id])
    code, out = cli("task", task.id)
    assert code == 0, out
    assert "snapshot_taken" in out and "Snapshot s1 taken" in out


def test_worker_refuses_a_bad_tag_naming_it(cli: Callable[..., tuple[int, str]]) -> None:
    code, output = cli("worker", "--tags", "dc-east,DC West")
    assert code == 2
    assert "--tags" in output and "'DC West'" in output
