"""The remoting module: scripts built from parameters, JSON results, errors kept, Int64 values."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from adapters.base import AuthError, NotFoundError, PlatformError, RetryableError
from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.windows_remote.powershell import (
    Endpoint,
    PSError,
    PSResult,
    RemoteClients,
    _tagged,
    acquire,
    script,
    translate_transport,
)

NASTY = "it's \"quoted\" `n $(Remove-Item C:\\ -Recurse) ${env:X}"


class Recorder:
    def __init__(self, answer: PSResult) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.logins: list[tuple[str, str]] = []
        self.closed = 0

    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> Recorder:
        self.logins.append((user, password))
        return self

    def run(self, text: str, parameters: Mapping[str, Any]) -> PSResult:
        self.calls.append((text, dict(parameters)))
        return self.answer

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Endpoint:
    monkeypatch.setenv("PS_TEST_USER", "lab\\admin")
    monkeypatch.setenv("PS_TEST_PASSWORD", "pw-Secret-9")
    return Endpoint("hv01.lab", "PS_TEST_USER", "PS_TEST_PASSWORD")


def test_values_are_parameters_never_script_text() -> None:
    ps = script("naming", "Rename-VM -Name $Name -NewName $NewName", Name="a", NewName=NASTY)
    assert ps.text.startswith("param($Name, $NewName)\n$ErrorActionPreference = 'Stop'\n")
    assert NASTY not in ps.text and "Remove-Item" not in ps.text
    assert ps.text.endswith("ConvertTo-Json -InputObject @(\nRename-VM -Name $Name -NewName $NewName\n)"
                            " -Depth 4 -Compress")
    with pytest.raises(ValueError, match="identifiers"):
        script("x", "", **{"a b": 1})


async def test_run_passes_parameters_and_parses_json(endpoint: Endpoint) -> None:
    fake = Recorder(PSResult(['[{"Name":"vm1","State":"Off"}]']))
    clients = RemoteClients(connect=fake.connect, sessions=SessionPool())
    key, session = acquire(endpoint, clients)
    try:
        out = await session.run(script("reading", "Get-VM -Name $Name", Name=NASTY))
        assert out == [{"Name": "vm1", "State": "Off"}]
        assert fake.calls[0][1] == {"Name": NASTY}
        assert fake.logins == [("lab\\admin", "pw-Secret-9")]
    finally:
        await clients.pool.release(key, session)
    assert fake.closed == 1


async def test_a_cmdlet_error_keeps_its_message_and_id(endpoint: Endpoint) -> None:
    error = PSError("Hyper-V was unable to find a virtual machine with name \"x\".",
                    "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM", "InvalidArgument")
    fake = Recorder(PSResult([], [error], failed=True))
    clients = RemoteClients(connect=fake.connect, sessions=SessionPool())
    key, session = acquire(endpoint, clients)
    try:
        with pytest.raises(PlatformError) as caught:
            await session.run(script("reading VM x", "Get-VM -Name $Name", Name="x"))
        assert str(caught.value) == (
            'hv01.lab: reading VM x failed: Hyper-V was unable to find a virtual machine with name "x". '
            "[InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM]")
        fake.answer = PSResult([], [PSError("gone", "", "ObjectNotFound")], failed=True)
        with pytest.raises(NotFoundError):
            await session.run(script("reading", "Get-VM"))
    finally:
        await clients.pool.release(key, session)


async def test_a_rejected_login_names_the_user_and_variable_not_the_password(endpoint: Endpoint) -> None:
    class AuthenticationError(Exception):  # pypsrp.exceptions.AuthenticationError's name
        pass

    def refuse(endpoint: Endpoint, user: str, password: str, timeout: float) -> Recorder:
        raise AuthenticationError(f"bad credentials for {user}")

    clients = RemoteClients(connect=refuse, sessions=SessionPool())
    key, session = acquire(endpoint, clients)
    try:
        with pytest.raises(AuthError) as caught:
            await session.run(script("reading", "Get-VM"))
        assert "lab\\admin" in str(caught.value) and "PS_TEST_PASSWORD" in str(caught.value)
        assert "pw-Secret-9" not in str(caught.value)
    finally:
        await clients.pool.release(key, session)


def test_ints_beyond_int32_are_sent_as_int64() -> None:
    from pypsrp.serializer import Serializer

    four_gib = _tagged(4096 * 2**20)
    assert Serializer().serialize(four_gib).tag == "I64"  # type: ignore[union-attr]
    assert _tagged(2) == 2 and _tagged(True) is True
    assert Serializer().serialize(_tagged(2)).tag == "I32"  # type: ignore[union-attr]


# ---------------------------------------------------------------- the real pypsrp path
class FakePool:
    """pypsrp.powershell.RunspacePool without a host."""

    fail_open: BaseException | None = None

    def __init__(self, wsman: Any) -> None:
        self.wsman = wsman

    def open(self) -> None:
        if FakePool.fail_open is not None:
            raise FakePool.fail_open

    def close(self) -> None:
        pass


class FakePowerShell:
    """pypsrp.powershell.PowerShell: what the host answered is set by the test."""

    made: ClassVar[list[FakePowerShell]] = []
    output: ClassVar[list[Any]] = []
    errors: ClassVar[list[Any]] = []
    invoke_fails: BaseException | None = None

    def __init__(self, pool: FakePool) -> None:
        self.scripts: list[str] = []
        self.parameters: dict[str, Any] = {}
        self.closed = 0
        self.had_errors = bool(FakePowerShell.errors)
        self.streams = type("Streams", (), {"error": list(FakePowerShell.errors)})()
        FakePowerShell.made.append(self)

    def add_script(self, script: str) -> None:
        self.scripts.append(script)

    def add_parameters(self, parameters: dict[str, Any]) -> None:
        self.parameters.update(parameters)

    def invoke(self) -> list[Any]:
        if FakePowerShell.invoke_fails is not None:
            raise FakePowerShell.invoke_fails
        return FakePowerShell.output

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_pypsrp(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """RunspacePool and PowerShell replaced; the WSMan is pypsrp's (its close is counted)."""
    import pypsrp.powershell
    import pypsrp.wsman

    closed: list[str] = []
    monkeypatch.setattr(pypsrp.powershell, "RunspacePool", FakePool)
    monkeypatch.setattr(pypsrp.powershell, "PowerShell", FakePowerShell)
    monkeypatch.setattr(pypsrp.wsman.WSMan, "close", lambda self: closed.append("wsman"))
    monkeypatch.setattr(FakePool, "fail_open", None)
    monkeypatch.setattr(FakePowerShell, "made", [])
    monkeypatch.setattr(FakePowerShell, "errors", [])
    monkeypatch.setattr(FakePowerShell, "invoke_fails", None)
    return closed


def _record(message: str | None, fq_error: str, category: int, category_message: str = "") -> Any:
    from pypsrp.complex_objects import ErrorRecord

    record = ErrorRecord(fq_error=fq_error, category=category, message=category_message)
    record._to_string = message  # what a deserialized record carries (<ToString>)
    return record


def test_pypsrp_run_binds_parameters_keeps_error_records_and_closes_each_pipeline(
        endpoint: Endpoint, fake_pypsrp: list[str]) -> None:
    from pypsrp.serializer import TaggedValue

    from adapters.windows_remote.powershell import PypsrpConnection

    conn = PypsrpConnection(endpoint, "lab\\admin", "pw-Secret-9", 30)
    FakePowerShell.output = ['[{"VMId":"1"}]']
    FakePowerShell.errors = [
        _record("Hyper-V was unable to find a virtual switch with name \"x\".",
                "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM", 5),
        _record(None, "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM", 13,
                "ObjectNotFound: (x:String) [Get-VM], VirtualizationException")]
    result = conn.run("param($Name, $Bytes)\nNew-VM", {"Name": NASTY, "Bytes": 6144 * 2**20})
    [ps] = FakePowerShell.made
    assert ps.scripts == ["param($Name, $Bytes)\nNew-VM"] and ps.parameters["Name"] == NASTY
    assert isinstance(ps.parameters["Bytes"], TaggedValue) and ps.parameters["Bytes"].tag == "I64"
    assert result == PSResult(['[{"VMId":"1"}]'], [
        PSError("Hyper-V was unable to find a virtual switch with name \"x\".",
                "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM", "InvalidArgument"),
        PSError("ObjectNotFound: (x:String) [Get-VM], VirtualizationException",
                "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM", "ObjectNotFound")], True)
    assert ps.closed == 1
    FakePowerShell.errors = []
    FakePowerShell.invoke_fails = ConnectionResetError("reset")
    with pytest.raises(ConnectionResetError):
        conn.run("Get-VM", {})
    assert FakePowerShell.made[-1].closed == 1  # closed after a failure too
    conn.close()
    assert fake_pypsrp == ["wsman"]


def test_a_login_whose_runspace_cannot_open_closes_its_wsman_session(
        endpoint: Endpoint, fake_pypsrp: list[str]) -> None:
    from adapters.windows_remote.powershell import PypsrpConnection

    class AuthenticationError(Exception):
        pass

    FakePool.fail_open = AuthenticationError("401")
    with pytest.raises(AuthenticationError):
        PypsrpConnection(endpoint, "lab\\admin", "pw-Secret-9", 30)
    assert fake_pypsrp == ["wsman"]


async def test_a_certificate_that_cannot_be_verified_is_not_retried_and_names_the_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real TLS server on 127.0.0.1 with a certificate of an unknown CA (trustme)."""
    import socket
    import ssl
    import threading

    import trustme

    from adapters.windows_remote.powershell import pypsrp_connect

    monkeypatch.setenv("PS_TEST_USER", "lab\\admin")
    monkeypatch.setenv("PS_TEST_PASSWORD", "pw-Secret-9")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                server_ctx.wrap_socket(conn, server_side=True)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    clients = RemoteClients(connect=pypsrp_connect, timeout=5, sessions=SessionPool())
    endpoint = Endpoint("127.0.0.1", "PS_TEST_USER", "PS_TEST_PASSWORD", port=listener.getsockname()[1])
    key, session = acquire(endpoint, clients)
    try:
        with pytest.raises(PlatformError) as caught:
            await session.run(script("reading", "Get-VM"), idempotent=True)
        assert not isinstance(caught.value, RetryableError)
        assert "certificate could not be verified" in str(caught.value)
        assert "ca_file" in str(caught.value) and "insecure: true" in str(caught.value)
        assert "pw-Secret-9" not in str(caught.value)
    finally:
        await clients.pool.release(key, session)
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_a_busy_or_restarting_host_is_retryable(code: int) -> None:
    from pypsrp.exceptions import WinRMTransportError

    error = translate_transport(WinRMTransportError("http", code, "<html>Service Unavailable</html>"),
                                "hv01: reading the VMs")
    assert isinstance(error, RetryableError)
    assert f"HTTP {code}" in str(error) and "<html>" not in str(error)


def test_other_http_answers_of_winrm_are_not_retried() -> None:
    from pypsrp.exceptions import WinRMTransportError

    error = translate_transport(WinRMTransportError("http", 400, "bad request"), "hv01: reading the VMs")
    assert isinstance(error, PlatformError) and not error.retryable


class FailsFirst(Recorder):
    """Raises ``error`` at its first run (before running the script when ``ran`` is False)."""

    def __init__(self, error: Exception, ran: bool) -> None:
        super().__init__(PSResult(['[{"VMId":"1"}]']))
        self.error, self.ran, self.runs = error, ran, 0

    def run(self, text: str, parameters: Mapping[str, Any]) -> PSResult:
        self.runs += 1
        if self.runs == 1:
            if self.ran:
                super().run(text, parameters)
            raise self.error
        return super().run(text, parameters)


QUICK = RetryPolicy(attempts=3, budget=10.0, first_delay=0.01, max_delay=0.02)


async def test_a_script_that_creates_is_sent_again_only_when_the_host_did_not_run_it(
        endpoint: Endpoint) -> None:
    from pypsrp.exceptions import WinRMTransportError

    busy = FailsFirst(WinRMTransportError("http", 503, "busy"), ran=False)
    clients = RemoteClients(connect=busy.connect, sessions=SessionPool(), read_retry=QUICK)
    key, session = acquire(endpoint, clients)
    try:
        assert await session.run(script("creating VM x", "New-VM -Name $Name", Name="x")) == [{"VMId": "1"}]
        assert len(busy.calls) == 1  # the host ran it once
    finally:
        await clients.pool.release(key, session)

    reset = FailsFirst(ConnectionResetError(104, "Connection reset by peer"), ran=True)
    clients = RemoteClients(connect=reset.connect, sessions=SessionPool(), read_retry=QUICK)
    key, session = acquire(endpoint, clients)
    try:
        with pytest.raises(RetryableError, match="connection failed"):
            await session.run(script("creating VM x", "New-VM -Name $Name", Name="x"))
        assert len(reset.calls) == 1  # it may have run: not sent again
    finally:
        await clients.pool.release(key, session)


def test_an_answer_cut_short_is_retryable_in_plain_words() -> None:
    import requests

    error = translate_transport(requests.exceptions.ChunkedEncodingError(
        "('Connection broken: IncompleteRead(120 bytes read, 200 more expected)')"), "hv01: reading")
    assert isinstance(error, RetryableError)
    assert str(error) == "hv01: reading: the connection dropped in the middle of WinRM's answer"
