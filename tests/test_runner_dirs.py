"""The runner's folders: under systemd's CacheDirectory/StateDirectory when the catalog does not
set them, and a serve, worker or check that names a folder it cannot write to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.catalog import load_catalog
from bot.cli.commands import main


def test_systemd_folders_are_the_defaults(catalog_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "var-cache"))
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'var-lib'}:{tmp_path / 'other'}")
    runner = load_catalog(catalog_dir / "layerbot.yml").runner
    assert runner.cache_dir == tmp_path / "var-cache" / "cache"
    assert runner.work_dir == tmp_path / "var-lib" / "work"


def test_the_catalogs_folders_win_over_systemds(write_catalog: Callable[[str], Path], catalog_dir: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "var-cache"))
    text = (catalog_dir / "layerbot.yml").read_text()
    write_catalog(text.replace("runner:\n", "runner:\n  cache_dir: mine\n"))
    assert load_catalog(catalog_dir / "layerbot.yml").runner.cache_dir == catalog_dir / "mine"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    runner = load_catalog(catalog_dir / "layerbot.yml").runner
    assert runner.work_dir == catalog_dir / ".layerbot" / "work"


@pytest.mark.parametrize("command", [["check"], ["check", "--json"], ["worker"], ["serve"]])
def test_a_folder_that_cannot_be_written_is_named(command: list[str], write_catalog: Callable[[str], Path],
                                                  catalog_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    (tmp_path / "a-file").write_text("")
    text = (catalog_dir / "layerbot.yml").read_text()
    write_catalog(text.replace("runner:\n", f"runner:\n  work_dir: {tmp_path / 'a-file' / 'work'}\n"))
    result = CliRunner().invoke(
        main, ["--config", str(catalog_dir / "layerbot.yml"), "--db", str(tmp_path / "t.db"), *command])
    assert result.exit_code == 2, result.output
    assert f"layerbot.yml: runner.work_dir: {tmp_path / 'a-file' / 'work'} is not writable: " \
           f"{tmp_path / 'a-file'} is not a folder" in result.output
    assert not (tmp_path / "t.db").exists() or command[0] == "check"
