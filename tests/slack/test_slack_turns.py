"""Answers on response_urls: rendering a burst of cards leaves the event loop between any two;
a connection dropped by the peer costs one retry, not the answer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bot.slack.blocks import text_message
from bot.slack.handlers import Background
from bot.slack.response_urls import ResponseUrls, Turns


async def test_steps_ready_together_run_in_turns_of_their_own() -> None:
    turns = Turns()
    order: list[str] = []

    async def render(i: int) -> int:
        return await turns.run(lambda: order.append(f"render {i}") or i)

    async def other() -> None:  # an ack, a timer: ready one loop turn later
        await asyncio.sleep(0)
        order.append("other")

    results = await asyncio.gather(*(render(i) for i in range(3)), other())
    assert results[:3] == [0, 1, 2]
    assert order == ["render 0", "other", "render 1", "render 2"]


async def test_a_failing_step_releases_the_turn() -> None:
    turns = Turns()

    def boom() -> None:
        raise ValueError("bad block")

    with pytest.raises(ValueError, match="bad block"):
        await turns.run(boom)
    assert await asyncio.wait_for(turns.run(lambda: 7), 1) == 7


async def test_an_answer_is_sent_again_once_after_a_dropped_connection() -> None:
    """A kept-alive connection the peer closed fails the first write of the next answer."""
    got: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        if not got:
            got.append({})
            assert request.transport is not None
            request.transport.close()  # as a peer closing an idle connection
            return web.Response()
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    responses = ResponseUrls(Turns())
    try:
        await responses.respond(f"http://127.0.0.1:{port}/hook")(text_message("hi"),
                                                                  response_type="ephemeral")
    finally:
        await responses.close()
        await runner.cleanup()
    assert got[1] == {"response_type": "ephemeral", "text": "hi",
                      "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}


async def test_work_spawned_together_starts_in_turns_of_its_own() -> None:
    """What a burst's acks spawn starts one per loop turn: the next requests' acks, ready
    meanwhile, are not held behind a hundred handlers' first steps."""
    background = Background(Turns())
    order: list[str] = []

    async def work(i: int) -> None:
        order.append(f"work {i}")

    async def ack() -> None:  # ready a loop turn after the spawns
        await asyncio.sleep(0)
        order.append("ack")

    for i in range(3):
        background.spawn(work(i), f"work {i}")
    await asyncio.gather(ack(), background.drain(5))
    assert order.index("ack") < order.index("work 1"), order
    assert sorted(order) == ["ack", "work 0", "work 1", "work 2"]
