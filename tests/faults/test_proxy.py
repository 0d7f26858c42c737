"""The fault proxy itself, observed by a plain aiohttp client: each kind of fault, what the
upstream saw, the counts, streamed uploads and a certificate change."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.faults.proxy import EVERY_FAULT, Fault, FaultProxy, FaultSchedule

pytestmark = pytest.mark.timeout(60)
BODY = b"0123456789" * 100


@dataclass
class Upstream:
    url: str
    #: (method, path, body length) of what reached it
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    #: the largest body chunk read at once (a proxy that buffers uploads sends one chunk)
    largest_read: int = 0


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    peer = Upstream("")

    async def handle(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            peer.largest_read = max(peer.largest_read, len(chunk))
        peer.seen.append((request.method, request.path, size))
        if request.path == "/redirect":
            return web.Response(status=201, headers={"Location": peer.url + "/upload/1"})
        return web.Response(body=BODY)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    peer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield peer
    await runner.cleanup()


def only(fault: Fault) -> FaultSchedule:
    return FaultSchedule(seed=1, rate=1.0, menu=(fault,))


@pytest.mark.parametrize("fault, status", [(Fault.STATUS_500, 500), (Fault.STATUS_502, 502),
                                           (Fault.STATUS_503, 503), (Fault.THROTTLED, 429)])
async def test_a_status_fault_is_answered_before_forwarding(
        upstream: Upstream, fault: Fault, status: int) -> None:
    async with FaultProxy(upstream.url, only(fault)) as proxy, aiohttp.ClientSession() as http:
        async with http.post(proxy.url + "/things", data=BODY) as answer:
            assert answer.status == status
            assert "Retry-After" not in answer.headers
        assert upstream.seen == [] and proxy.forwarded == 0
        assert proxy.counts() == {fault.value: 1}


async def test_429_with_retry_after_in_seconds(upstream: Upstream) -> None:
    schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.THROTTLED_RETRY_AFTER,), retry_after=3)
    async with FaultProxy(upstream.url, schedule) as proxy, aiohttp.ClientSession() as http, \
            http.get(proxy.url + "/x") as answer:
        assert (answer.status, answer.headers["Retry-After"]) == (429, "3")


@pytest.mark.parametrize("fault", [Fault.RESET_MID_BODY, Fault.TRUNCATED])
async def test_a_cut_answer_reaches_the_upstream_first(upstream: Upstream, fault: Fault) -> None:
    async with FaultProxy(upstream.url, only(fault)) as proxy, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.put(proxy.url + "/blob", data=BODY) as answer:
                assert answer.status == 200  # the headers came whole
                assert answer.content_length == len(BODY) + 1
                await answer.read()
        assert upstream.seen == [("PUT", "/blob", len(BODY))]  # the upstream did act
        assert proxy.counts() == {fault.value: 1} and proxy.forwarded == 1


async def test_an_unanswered_close_sends_no_byte_after_the_upstream_acted(upstream: Upstream) -> None:
    async with FaultProxy(upstream.url, only(Fault.UNANSWERED)) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /things HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(BODY), BODY))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # to the connection's end
        writer.close()
        assert answer == b""  # not a status line, not a header: nothing
        assert upstream.seen == [("POST", "/things", len(BODY))]  # the upstream did act
        assert proxy.counts() == {"closed unanswered": 1} and proxy.forwarded == 1
        async with aiohttp.ClientSession() as http:  # what an HTTP client makes of it
            proxy.schedule = only(Fault.UNANSWERED)
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await http.post(proxy.url + "/again", data=BODY)
        assert upstream.seen[-1] == ("POST", "/again", len(BODY))


async def test_a_stall_outlasts_the_clients_timeout(upstream: Upstream) -> None:
    async with FaultProxy(upstream.url, only(Fault.STALL), stall_seconds=1.0) as proxy, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.3)) as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(proxy.url + "/slow") as answer:
                await answer.read()
        assert upstream.seen == [] and proxy.counts() == {"stall": 1}
        with pytest.raises(ValueError, match="lower the client's timeout"):
            FaultProxy(upstream.url, only(Fault.STALL), stall_seconds=60)


async def test_forwarded_uploads_are_streamed_and_locations_point_at_the_proxy(
        upstream: Upstream) -> None:
    size = 32 << 20

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(size // (1 << 20)):
            yield bytes(1 << 20)

    async with FaultProxy(upstream.url, FaultSchedule(seed=1, rate=0.0)) as proxy, \
            aiohttp.ClientSession() as http:
        async with http.put(proxy.url + "/big", data=chunks()) as answer:
            assert answer.status == 200 and await answer.read() == BODY
        async with http.post(proxy.url + "/redirect") as answer:
            assert answer.headers["Location"] == proxy.url + "/upload/1"
    assert upstream.seen[0] == ("PUT", "/big", size)
    assert upstream.largest_read < size // 4  # it arrived in pieces, not as one buffer
    assert proxy.forwarded == 2 and proxy.total_injected == 0


async def test_the_schedule_is_seeded_and_retries_are_counted(upstream: Upstream) -> None:
    def run(seed: int) -> list[Fault | None]:
        schedule = FaultSchedule(seed=seed, rate=0.2)
        return [schedule.draw("GET", f"/{i}") for i in range(200)]

    assert run(7) == run(7) and run(7) != run(8)
    drawn = [f for f in run(7) if f is not None]
    assert 20 <= len(drawn) <= 60 and set(drawn) <= set(EVERY_FAULT)
    schedule = FaultSchedule(seed=3, rate=1.0, menu=(Fault.STATUS_503,),
                             applies=lambda method, path: path == "/flaky")
    async with FaultProxy(upstream.url, schedule) as proxy, aiohttp.ClientSession() as http:
        for path in ("/flaky", "/steady", "/flaky"):
            async with http.get(proxy.url + path) as answer:
                await answer.read()
        proxy.heal()
        async with http.get(proxy.url + "/flaky") as answer:
            assert answer.status == 200
    assert proxy.counts() == {"503": 2} and proxy.retried == 2
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultSchedule(seed=1, rate=1.5)


async def test_a_certificate_change_is_refused_by_a_client_that_trusts_the_first(
        upstream: Upstream) -> None:
    first, second = trustme.CA(), trustme.CA()
    serving = first.issue_cert("127.0.0.1").configure_cert
    tls_a = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving(tls_a)
    tls_b = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    second.issue_cert("127.0.0.1").configure_cert(tls_b)
    trusting_a = ssl.create_default_context()
    first.configure_trust(trusting_a)
    async with FaultProxy(upstream.url, FaultSchedule(seed=1, rate=0.0), tls=tls_a) as proxy:
        assert proxy.url.startswith("https://")
        async with aiohttp.ClientSession() as http, \
                http.get(proxy.url + "/x", ssl=trusting_a) as answer:
            assert answer.status == 200
        proxy.change_certificate(tls_b)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
                await http.get(proxy.url + "/x", ssl=trusting_a)
        assert "certificate verify failed" in str(refused.value)
        assert proxy.counts() == {"certificate changed": 1}
        assert len(upstream.seen) == 1  # the refused request never reached it


async def test_retried_means_the_same_request_sent_again(upstream: Upstream) -> None:
    """Another query (the next poll, the next page), another chunk of an upload (its
    Content-Range) or another body length is not the faulted request tried again."""
    schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,),
                             applies=lambda method, path: path == "/flaky")
    async with FaultProxy(upstream.url, schedule) as proxy, aiohttp.ClientSession() as http:
        async def send(method: str, query: str = "", body: bytes | None = None,
                       headers: dict[str, str] | None = None) -> None:
            async with http.request(method, f"{proxy.url}/flaky{query}", data=body,
                                    headers=headers) as answer:
                await answer.read()

        await send("GET", "?page=1")
        proxy.heal()
        await send("GET", "?page=2")
        await send("GET")
        assert [i.retried for i in proxy.injections] == [False]
        await send("GET", "?page=1")
        assert [i.retried for i in proxy.injections] == [True]

        proxy.schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,))
        await send("PUT", body=BODY[:10], headers={"Content-Range": "bytes 0-9/20"})
        proxy.heal()
        await send("PUT", body=BODY[:10], headers={"Content-Range": "bytes 10-19/20"})
        await send("PUT", body=BODY[:20], headers={"Content-Range": "bytes 0-19/20"})
        assert [i.retried for i in proxy.injections] == [True, False]
        await send("PUT", body=BODY[:10], headers={"Content-Range": "bytes 0-9/20"})
    assert [i.retried for i in proxy.injections] == [True, True] and proxy.retried == 2


async def test_a_per_attempt_handle_in_the_query_does_not_hide_a_retry(upstream: Upstream) -> None:
    """XenServer's disk import names a task made anew for each try: with ``per_attempt``
    naming it, the import sent again is a retry; the import of another disk is not."""
    schedule = FaultSchedule(seed=1, rate=1.0, menu=(Fault.STATUS_503,))
    async with FaultProxy(upstream.url, schedule, per_attempt=("task_id",)) as proxy, \
            aiohttp.ClientSession() as http:
        async def put(query: str) -> None:
            async with http.put(f"{proxy.url}/import?{query}", data=BODY) as answer:
                await answer.read()

        await put("vdi=1&task_id=a")
        proxy.heal()
        await put("vdi=2&task_id=b")
        assert proxy.retried == 0
        await put("task_id=c&vdi=1")
    assert proxy.retried == 1
