"""docs/operations.md lists exactly the metrics a process exposes: a metric added, renamed or
dropped in code without the docs fails here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.store.task_store import TaskStore

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


@dataclass
class IdleRunner:
    busy: int = 0
    waiting: int = 0
    max_parallel: int = 2
    tags: frozenset[str] = frozenset()


def documented() -> set[str]:
    text = GUIDE.read_text()
    table = text[text.index("### Reference"):text.index("### Sample alert rules")]
    return set(re.findall(r"^\| `(layerbot_\w+)`", table, re.MULTILINE))


def exposed(tmp_path: Path) -> set[str]:
    metrics.reset()
    cache = tmp_path / "cache"
    cache.mkdir()
    store = TaskStore(tmp_path / "layerbot.db")
    unwatch = metrics.watch(store, IdleRunner(), cache)
    try:
        metrics.count_slack_call("chat.postMessage", "429")  # labelled series appear once used
        metrics.add_uploaded_bytes("Local folder", 1)
        metrics.count_task_finished("Local folder", "failed")
        with metrics.timed_stage("compose", "Local folder"):
            pass
        text = metrics.exposition()[0].decode()
    finally:
        unwatch()
        store.close()
        metrics.reset()
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("layerbot_"):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_exposed_metric_is_documented_and_every_documented_one_exposed(tmp_path: Path) -> None:
    assert exposed(tmp_path) == documented()
