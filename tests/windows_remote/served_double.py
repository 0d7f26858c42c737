"""A PowerShell double (tests/hyperv, tests/pvs) served from the test process to `layerbot
worker` processes over loopback, so every worker's runspace runs against ONE double's state.

The test wraps its double in :class:`DoubleServer` (127.0.0.1, a random port, a random authkey:
``multiprocessing.connection``'s HMAC challenge comes before anything is unpickled) and puts
:meth:`DoubleServer.environment` into the workers' environment; a worker's ``connect`` is
:class:`DoubleClient.from_environment` ``().connect``. Each runspace is one connection: the
double's ``connect`` runs when it opens, ``run`` per script (the double validates as it does
in-process) and ``close`` when it closes; a killed worker's connection just ends.

Not ``multiprocessing.managers``: its ``Server.serve_forever`` resets ``sys.stdout`` (pytest's
capture) and calls ``sys.exit``, and its accept loop spins once its listener is closed."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import TYPE_CHECKING, Any, Protocol

from adapters.windows_remote.powershell import Endpoint, PSConnection, PSResult

if TYPE_CHECKING:  # the workers import this module: not pytest
    import pytest

#: "host:port" of the served double, and its authkey (hex), in the workers' environment
ADDRESS_ENV = "LAYERBOT_TEST_PS_DOUBLE_ADDRESS"
AUTHKEY_ENV = "LAYERBOT_TEST_PS_DOUBLE_AUTHKEY"


class PowerShellDouble(Protocol):
    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> PSConnection: ...


class DoubleServer:
    """Serves ``double`` from threads of this process (the double guards its state)."""

    def __init__(self, double: PowerShellDouble) -> None:
        self.double = double
        self.authkey = os.urandom(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=self.authkey)
        host, port = self._listener.address
        self.address: tuple[str, int] = (str(host), int(port))
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="ps-double-accept", daemon=True)
        self._accepter.start()

    def environment(self) -> dict[str, str]:
        host, port = self.address
        return {ADDRESS_ENV: f"{host}:{port}", AUTHKEY_ENV: self.authkey.hex()}

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except (OSError, EOFError, AuthenticationError):
                if self._closed:
                    return
                continue  # a client that failed the authkey challenge, or went away during it
            with self._lock:
                if self._closed:
                    connection.close()
                    return
                self._connections.add(connection)
                thread = threading.Thread(target=self._serve, args=(connection,), name="ps-double-runspace",
                                          daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: Connection) -> None:
        runspace: PSConnection | None = None
        try:
            while True:
                call, args = connection.recv()
                try:
                    if call == "connect":
                        runspace = self.double.connect(*args)
                        answer: Any = None
                    elif call == "run" and runspace is not None:
                        answer = runspace.run(*args)
                    elif call == "close" and runspace is not None:
                        runspace.close()
                        return
                    else:
                        raise RuntimeError(f"the served double got {call!r} out of order")
                except Exception as exc:  # the worker's runner sees the double's own exception
                    connection.send(("raise", exc))
                else:
                    connection.send(("return", answer))
        except (EOFError, OSError):
            return  # the worker was killed (or the server is stopping)
        finally:
            with self._lock:  # closed under the lock: stop() shuts down only open ones
                self._connections.discard(connection)
                connection.close()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):  # wakes the blocked accept(): closing it would not
            Client(self.address, authkey=self.authkey).close()
        self._accepter.join(10)
        self._listener.close()
        with self._lock:
            for connection in self._connections:  # still open: ends its thread's recv() (EOF)
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(connection.fileno())) as s:
                    s.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)


class ServedRunspace:
    """A runspace of the served double (the PSConnection a worker's session holds)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def _call(self, call: str, *args: Any) -> Any:
        with self._lock:
            self._connection.send((call, args))
            how, value = self._connection.recv()
        if how == "raise":
            raise value
        return value

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult:
        result = self._call("run", script, dict(parameters))
        assert isinstance(result, PSResult), result
        return result

    def close(self) -> None:
        try:
            self._call("close")
        except (EOFError, OSError):
            pass  # the test process stopped serving: nothing to close there
        finally:
            self._connection.close()


class DoubleClient:
    """The workers' side: ``connect`` (a RemoteClients.connect) opens a runspace of the double."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.address, self.authkey = address, authkey

    @classmethod
    def from_environment(cls) -> DoubleClient:
        host, port = os.environ[ADDRESS_ENV].rsplit(":", 1)
        return cls((host, int(port)), bytes.fromhex(os.environ[AUTHKEY_ENV]))

    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> ServedRunspace:
        runspace = ServedRunspace(Client(self.address, authkey=self.authkey))
        try:
            runspace._call("connect", endpoint, user, password, timeout)
        except BaseException:
            runspace._connection.close()
            raise
        return runspace


@contextlib.contextmanager
def served(double: PowerShellDouble, monkeypatch: pytest.MonkeyPatch) -> Iterator[DoubleServer]:
    """``double`` served to the worker processes this test starts (they find it through the
    environment), stopped at the end."""
    server = DoubleServer(double)
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop()
