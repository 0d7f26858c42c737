"""A watcher shared by several tasks writes its records without any one task's fields."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from adapters.nutanix.prism_watch import EndpointWatch
from adapters.retry import RetryPolicy
from bot import logcontext


class ListingPrism:
    """Answers the watch's list call with both VMs on, logging the call as a client does."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, method: str, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls += 1
        logging.getLogger("adapters.nutanix.test").info("%s %s", method, path)
        return {"entities": [{"metadata": {"uuid": u}, "status": {"resources": {"power_state": "ON"}}}
                             for u in ("vm-a", "vm-b")]}

    async def close(self) -> None:
        return None


async def test_a_shared_watch_logs_without_the_starting_tasks_fields(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(logcontext.TaskFieldsFilter())
    watch = EndpointWatch(ListingPrism(), (0.01, 0.05), RetryPolicy(attempts=1, budget=1.0))  # type: ignore[arg-type]

    async def wait_for(uuid: str, task_id: str) -> None:
        with logcontext.task_context(task_id, "win10", "prism"):
            queue = watch.add(uuid, uuid)
            await asyncio.wait_for(queue.get(), 5)
            logging.getLogger("bot.runner.test").info("%s is on", uuid)
            watch.remove(uuid, queue)

    with caplog.at_level(logging.INFO):
        await asyncio.gather(wait_for("vm-a", "t-a"), wait_for("vm-b", "t-b"))
        await watch.stop()
    watcher = [r for r in caplog.records if r.name == "adapters.nutanix.test"]
    assert watcher and all(r.task_id is None for r in watcher), [r.task_id for r in watcher]
    own = {r.getMessage(): r.task_id for r in caplog.records if r.name == "bot.runner.test"}
    assert own == {"vm-a is on": "t-a", "vm-b is on": "t-b"}


async def test_detached_task_keeps_other_context_variables() -> None:
    other: contextvars.ContextVar[str] = contextvars.ContextVar("other", default="unset")
    other.set("kept")

    async def read() -> tuple[dict[str, str], str]:
        return dict(logcontext.current()), other.get()

    with logcontext.task_context("t-a", "win10", "prism"):
        assert await logcontext.detached_task(read()) == ({}, "kept")
