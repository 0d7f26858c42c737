"""The journal a XenServer call is run again with after a refused request: answered requests
are answered again without being sent, the rest are sent, and a run that takes another path
sends from where it differs."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.xenserver.xapi_replay import Journal


class Xapi:
    """What ``XenAPI.Session.xenapi_request`` does here: counts requests, refuses one on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []
        self.refuse: str | None = None

    def xenapi_request(self, method: str, params: tuple[Any, ...]) -> str:
        if method == self.refuse:
            self.refuse = None
            raise ConnectionRefusedError(method)
        self.sent.append((method, params))
        return f"OpaqueRef:{len(self.sent)}"


def attach(x: Any) -> list[str]:
    vbd = x.VBD.create({"VM": "OpaqueRef:vm"})
    vifs = x.VM.get_VIFs("OpaqueRef:vm")
    return [vbd, vifs, x.VIF.create({"device": "0"})]


def test_a_run_again_sends_only_the_requests_not_answered_yet() -> None:
    xapi, journal = Xapi(), Journal()
    xapi.refuse = "VIF.create"
    with pytest.raises(ConnectionRefusedError):
        attach(journal.replaying(xapi))
    assert attach(journal.replaying(xapi)) == ["OpaqueRef:1", "OpaqueRef:2", "OpaqueRef:3"]
    assert [method for method, _ in xapi.sent] == ["VBD.create", "VM.get_VIFs", "VIF.create"]


def test_a_run_that_takes_another_path_sends_from_where_it_differs() -> None:
    xapi, journal = Xapi(), Journal()
    first = journal.replaying(xapi)
    first.VM.get_power_state("OpaqueRef:vm")
    first.VM.get_VIFs("OpaqueRef:vm")
    again = journal.replaying(xapi)
    assert again.VM.get_power_state("OpaqueRef:vm") == "OpaqueRef:1"  # replayed
    assert again.VM.get_VBDs("OpaqueRef:vm") == "OpaqueRef:3"  # another request: sent
    assert again.VM.get_VIFs("OpaqueRef:vm") == "OpaqueRef:4"  # nothing recorded after it
    assert len(xapi.sent) == 4
