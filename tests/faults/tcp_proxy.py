"""A fault-injecting TCP relay on 127.0.0.1 (a random port) in front of one upstream, for the
protocols that are not HTTP (SMB to Samba), on the test's event loop.

A seeded :class:`TcpSchedule` decides, connection by connection, whether to inject a fault and
which: refuse the connection (accept, then reset before a byte is relayed), reset it after N
bytes from the client (mid-copy), or stall it after N bytes (nothing relayed any more, both
ways) for ``stall_seconds`` and then reset it. The byte count is drawn from ``cut_range``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field

_CHUNK = 1 << 16


class TcpFault(enum.Enum):
    REFUSE = "refused"
    RESET_AFTER = "reset after N bytes"
    STALL = "stall"


EVERY_TCP_FAULT = (TcpFault.REFUSE, TcpFault.RESET_AFTER, TcpFault.STALL)


@dataclass(frozen=True)
class Planned:
    fault: TcpFault
    #: client bytes relayed before the fault (0 for a refusal)
    after: int


@dataclass
class TcpSchedule:
    """``random.Random(seed)`` draws, per connection, a fault with probability ``rate``."""

    seed: int
    rate: float
    menu: tuple[TcpFault, ...] = EVERY_TCP_FAULT
    #: client bytes before a reset or a stall: drawn uniformly in this range
    cut_range: tuple[int, int] = (1, 1 << 20)
    enabled: bool = True
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate!r} is not between 0 and 1")
        if not self.menu:
            raise ValueError("the fault menu is empty")
        low, high = self.cut_range
        if not 0 < low <= high:
            raise ValueError(f"cut_range {self.cut_range!r} is not 0 < low <= high")
        self._random = random.Random(self.seed)

    def draw(self) -> Planned | None:
        if not self.enabled:
            return None
        # every draw happens for every connection: the sequence depends on the seed alone
        hit = self._random.random() < self.rate
        pick = self.menu[self._random.randrange(len(self.menu))]
        after = self._random.randint(*self.cut_range)
        if not hit:
            return None
        return Planned(pick, 0 if pick is TcpFault.REFUSE else after)


class TcpFaultProxy:
    """``async with TcpFaultProxy(port, schedule) as relay``: ``relay.port`` reaches
    127.0.0.1:``port`` through the faults."""

    def __init__(self, upstream_port: int, schedule: TcpSchedule, *, stall_seconds: float = 2.0) -> None:
        if stall_seconds > 5:
            raise ValueError("a stall longer than 5 s slows the suite: lower the client's timeout")
        self.upstream_port = upstream_port
        self.schedule = schedule
        self.stall_seconds = stall_seconds
        self.port = 0
        self.connections = 0
        #: connections opened before :meth:`heal` (while the client's own work ran)
        self.connections_before_heal = 0
        #: connections relayed to the upstream (not refused)
        self.forwarded = 0
        #: the number of the connection each fault hit, once it fired (a planned reset or
        #: stall of a connection closed before its byte N never happened)
        self.faulted_at: list[int] = []
        self.injected: Counter[TcpFault] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpFaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    @property
    def retried(self) -> int:
        """Faults after which the client connected again to go on with its work: a connection
        opened later but before :meth:`heal` (a connection of the cleanup that follows a
        failed publish is not the publish trying again)."""
        return sum(1 for n in self.faulted_at if n < self.connections_before_heal)

    def counts(self) -> dict[str, int]:
        ordered = sorted(self.injected.items(), key=lambda item: item[0].value)
        return {f"tcp {fault.value}": n for fault, n in ordered}

    def heal(self) -> None:
        self.schedule.enabled = False

    def _fired(self, fault: TcpFault, connection: int) -> None:
        self.injected[fault] += 1
        self.faulted_at.append(connection)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        connection = self.connections
        if self.schedule.enabled:
            self.connections_before_heal = connection
        planned = self.schedule.draw()
        try:
            if planned is not None and planned.fault is TcpFault.REFUSE:
                self._fired(planned.fault, connection)
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self.forwarded += 1
            try:
                stalled = asyncio.Event()
                upward = asyncio.ensure_future(
                    self._pump(reader, up_writer, planned, stalled, connection))
                downward = asyncio.ensure_future(self._pump(up_reader, writer, None, stalled, connection))
                await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
                for pump in (upward, downward):
                    pump.cancel()
                await asyncio.gather(upward, downward, return_exceptions=True)
            finally:
                _reset(up_writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the relay is closing: the connection ends with it
        finally:
            _reset(writer)
            self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    planned: Planned | None, stalled: asyncio.Event, connection: int) -> None:
        """Copy until EOF; with a plan, relay ``planned.after`` bytes, then reset or stall
        (``stalled`` holds the other direction too); the fault counts from there."""
        left = planned.after if planned is not None else -1
        while True:
            data = await source.read(_CHUNK if left < 0 else min(_CHUNK, left))
            if not data:
                return
            if stalled.is_set():
                await asyncio.sleep(self.stall_seconds)
                return
            sink.write(data)
            await sink.drain()
            if left < 0:
                continue
            left -= len(data)
            if left == 0:
                assert planned is not None
                self._fired(planned.fault, connection)
                if planned.fault is TcpFault.STALL:
                    stalled.set()
                    await asyncio.sleep(self.stall_seconds)  # the client gave up meanwhile
                return  # the caller resets both sides


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
