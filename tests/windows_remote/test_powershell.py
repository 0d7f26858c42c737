"""The remoting module: scripts built from parameters, JSON results, errors kept, Int64 values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from adapters.base import AuthError, NotFoundError, PlatformError
from adapters.blocking import SessionPool
from adapters.windows_remote.powershell import (
    Endpoint,
    PSError,
    PSResult,
    RemoteClients,
    _tagged,
    acquire,
    script,
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
