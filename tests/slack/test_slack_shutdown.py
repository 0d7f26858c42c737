"""Stopping the Slack app: the work still running is cancelled and awaited (its cleanup runs
before what it uses is closed, no coroutine is left never awaited) and no answer opens a new
HTTP session after the answers' session was closed."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from bot.slack.blocks import text_message
from bot.slack.handlers import Background
from bot.slack.response_urls import ResponseUrls, Turns


async def test_drain_awaits_the_work_it_cancels() -> None:
    background = Background(Turns())
    cleaned: list[int] = []

    async def work(i: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(i)

    for i in range(3):
        background.spawn(work(i), f"work {i}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await background.drain(0)
        assert not background._tasks
        # work 0 started and ran its cleanup; 1 and 2 were cancelled before their turn
        assert cleaned == [0]
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []


async def test_no_session_is_opened_after_close() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    responses = ResponseUrls(Turns())
    await responses.close()
    with pytest.raises(RuntimeError, match="the Slack app is stopping"):
        await responses.respond(f"http://127.0.0.1:{port}/hook")(text_message("late"))
    assert responses._session is None
