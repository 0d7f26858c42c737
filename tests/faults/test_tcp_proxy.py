"""The TCP fault relay in front of an echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.faults.tcp_proxy import Planned, TcpFault, TcpFaultProxy, TcpSchedule

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


def only(fault: TcpFault, after: int = 1000) -> TcpSchedule:
    return TcpSchedule(seed=1, rate=1.0, menu=(fault,), cut_range=(after, after))


async def test_without_faults_bytes_pass_both_ways(echo: int) -> None:
    async with TcpFaultProxy(echo, TcpSchedule(seed=1, rate=0.0)) as relay:
        payload = bytes(range(256)) * 4096
        assert await round_trip(relay.port, payload) == payload
        assert relay.connections == 1 and relay.total_injected == 0


async def test_a_refused_connection_is_reset_before_any_byte(echo: int) -> None:
    async with TcpFaultProxy(echo, only(TcpFault.REFUSE)) as relay:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await round_trip(relay.port, b"hello")
        assert relay.counts() == {"tcp refused": 1}


async def test_a_reset_after_n_bytes_relays_exactly_n_then_drops(echo: int) -> None:
    async with TcpFaultProxy(echo, only(TcpFault.RESET_AFTER, 1000)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(bytes(5000))
        got = b""
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise asyncio.IncompleteReadError(got, 5000)
                got += chunk
        writer.close()
        assert len(got) <= 1000  # nothing past the cut reached the server
        assert relay.counts() == {"tcp reset after N bytes": 1}


async def test_a_stall_holds_the_connection_then_resets_it(echo: int) -> None:
    async with TcpFaultProxy(echo, only(TcpFault.STALL, 10), stall_seconds=0.5) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(bytes(100))
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):  # what a client with a timeout sees
            await asyncio.wait_for(reader.readexactly(100), 0.2)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(100)
        assert time.monotonic() - started >= 0.4
        writer.close()


async def test_the_schedule_is_seeded_and_healing_stops_faults() -> None:
    def plans(seed: int) -> list[Planned | None]:
        schedule = TcpSchedule(seed=seed, rate=0.3)
        return [schedule.draw() for _ in range(50)]

    assert plans(7) == plans(7) != plans(8)
    assert 5 <= sum(p is not None for p in plans(7)) <= 30
    schedule = TcpSchedule(seed=7, rate=1.0)
    schedule.enabled = False
    assert schedule.draw() is None
    with pytest.raises(ValueError, match="fault rate"):
        TcpSchedule(seed=1, rate=2.0)


async def test_a_planned_cut_counts_only_when_its_byte_comes(echo: int) -> None:
    """A connection closed before byte N was never reset or stalled: no fault."""
    for fault in (TcpFault.RESET_AFTER, TcpFault.STALL):
        async with TcpFaultProxy(echo, only(fault, 1000), stall_seconds=0.2) as relay:
            assert await round_trip(relay.port, bytes(100)) == bytes(100)
            await asyncio.sleep(0.05)  # the relay sees the close
            assert (relay.total_injected, relay.retried) == (0, 0)
            assert relay.connections == 1


async def test_retried_counts_a_fault_followed_by_a_connection_before_healing(echo: int) -> None:
    async with TcpFaultProxy(echo, only(TcpFault.REFUSE)) as relay:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await round_trip(relay.port, b"first")
        assert (relay.total_injected, relay.retried) == (1, 0)
        relay.heal()
        assert await round_trip(relay.port, b"cleanup") == b"cleanup"
        assert relay.retried == 0  # a connection after healing is not the client retrying
    async with TcpFaultProxy(echo, only(TcpFault.REFUSE)) as relay:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await round_trip(relay.port, b"first")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await round_trip(relay.port, b"again")
        assert (relay.total_injected, relay.retried, relay.connections) == (2, 1, 2)
