"""prometheus-client is loaded only by what measures or serves metrics: the short commands
(and every --help) start without it."""

from __future__ import annotations

from pathlib import Path

from tests.test_lazy_imports import DEMO, cli_modules


def test_short_commands_do_not_load_prometheus_client(tmp_path: Path) -> None:
    from bot.store.task_store import TaskStore

    TaskStore(tmp_path / "t.db").close()  # `tasks` reads a database; it creates none
    for args in (["--help"], ["worker", "--help"], ["tasks"], ["--config", str(DEMO), "templates"]):
        modules = cli_modules(tmp_path, *args)
        assert "bot.cli.commands" in modules
        assert [m for m in modules if m.startswith(("prometheus_client", "bot.metrics"))] == [], args
