"""Small guarantees of bot.metrics: bounded Slack method labels, one registry per process, and
the worker's printed URL for an IPv6 address."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.metrics import registry
from bot.metrics.http import ops_url
from bot.metrics.slack_calls import api_method


@pytest.mark.parametrize(("url", "method"), [
    ("https://slack.com/api/chat.update?x=1", "chat.update"),
    ("https://slack.com/api/conversations.info/", "conversations.info"),
    ("https://slack.com/api/admin.apps.approved.list", "admin.apps.approved.list"),
    ("https://slack.com/api/files.getUploadURLExternal", "files.getUploadURLExternal"),
    ("https://slack.com/api/", "other"),
    ("https://slack.com/api/auth", "other"),
    ("https://files.slack.com/upload/v1/CwABAAAAXAoAAZ8", "other"),
    ("https://slack.com/api/chat.update%20x", "other"),
    ("https://slack.com/api/Chat.update", "other"),
])
def test_api_method_is_a_method_name_or_other(url: str, method: str) -> None:
    assert api_method(url) == method


def test_concurrent_first_calls_make_one_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = registry.Metrics

    def slow_metrics() -> registry.Metrics:
        time.sleep(0.05)  # widens the window two unlocked first calls would both enter
        made.append(object())
        return real()

    monkeypatch.setattr(registry, "Metrics", slow_metrics)
    monkeypatch.setattr(registry, "_current", None)
    start = threading.Barrier(8)

    def first_call(_: int) -> registry.Metrics:
        start.wait()
        return registry.current()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(first_call, range(8)))
    assert len(made) == 1
    assert all(m is got[0] for m in got)


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9464/metrics"),
    ("::1", "http://[::1]:9464/metrics"),
    ("[::1]", "http://[::1]:9464/metrics"),
    ("metrics.example", "http://metrics.example:9464/metrics"),
])
def test_ops_url_brackets_an_ipv6_address(host: str, url: str) -> None:
    assert ops_url(host, 9464) == url
