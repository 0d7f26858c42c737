"""The sample alert rules of docs/operations.md: valid rule YAML, every metric they use is one a
process exposes (the reference table), and the event-loop alert fires on a loop that stalls.
(promtool is not on this machine: the rules are checked here instead.)"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import yaml

from bot import metrics
from bot.metrics.loop_lag import LoopLagMonitor
from tests.test_metrics_docs import GUIDE, documented

#: PromQL words that are not metric names
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}
#: metrics other than layerbot's: Prometheus' own, prometheus-client's process collector
OTHERS = {"up", "process_start_time_seconds"}
HISTOGRAMS = {"layerbot_stage_duration_seconds", "layerbot_event_loop_lag_seconds"}


def rules() -> list[dict[str, Any]]:
    text = GUIDE.read_text()
    section = text[text.index("### Sample alert rules"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "no yaml block under 'Sample alert rules'"
    parsed = yaml.safe_load(block.group(1))
    [group] = parsed["groups"]
    return list(group["rules"])


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return names - KEYWORDS


def known() -> set[str]:
    names = set(OTHERS)
    for name in documented():
        names.add(name)
        if name in HISTOGRAMS:
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_every_rule_is_an_alert_with_an_expression_and_a_severity() -> None:
    found = rules()
    assert len(found) >= 8
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Layerbot[A-Za-z]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_every_rule_uses_only_metrics_a_process_exposes() -> None:
    for rule in rules():
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        assert names <= known(), (rule["alert"], names - known())
    assert "delta(" not in "".join(str(r["expr"]) for r in rules())  # delta() is for gauges


def test_the_failed_tasks_alert_reads_the_finished_counter() -> None:
    [rule] = [r for r in rules() if r["alert"] == "LayerbotTasksFailing"]
    assert 'increase(layerbot_tasks_finished_total{status="failed"}' in rule["expr"]


async def test_the_loop_lag_alert_fires_on_a_loop_frozen_a_fifth_of_the_time() -> None:
    [rule] = [r for r in rules() if r["alert"] == "LayerbotEventLoopLag"]
    threshold = re.search(r"rate\(layerbot_event_loop_lag_seconds_sum\[\w+\]\)\s*>\s*([\d.]+)", rule["expr"])
    assert threshold, rule["expr"]
    registry = metrics.reset()
    stop = asyncio.Event()
    monitor = asyncio.create_task(LoopLagMonitor().run(stop))
    started = time.monotonic()
    for _ in range(4):  # 0.2 s frozen in every second, as a blocking call on the loop would
        await asyncio.sleep(0.8)
        time.sleep(0.2)
    stop.set()
    await monitor
    elapsed = time.monotonic() - started
    lagging = registry.loop_lag.collect()[0]
    total = next(s.value for s in lagging.samples if s.name.endswith("_sum"))
    metrics.reset()
    # what rate(_sum) computes: seconds spent lagging per second
    assert total / elapsed > float(threshold.group(1))
