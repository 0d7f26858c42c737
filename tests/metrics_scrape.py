"""Scraping /metrics over HTTP and reading it with prometheus-client's own parser."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.store import states
from bot.store.interface import Store

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{key} not in {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return parse(await resp.text())


def tasks_in_store(store: Store) -> dict[tuple[str, str], int]:
    """(status, platform) -> tasks, counted from the tasks themselves (not the GROUP BY)."""
    counts: dict[tuple[str, str], int] = {}
    for task in store.list_tasks(limit=10_000):
        key = (task.status, task.platform)
        counts[key] = counts.get(key, 0) + 1
    return counts


def assert_task_counts_match(samples: Samples, store: Store) -> None:
    counts = tasks_in_store(store)
    for platform in {p for _, p in counts}:
        for status in states.ALL:
            assert value(samples, "layerbot_tasks", status=status, platform=platform) \
                == counts.get((status, platform), 0), (status, platform)
    assert value(samples, "layerbot_store_up") == 1
