"""HTTP faults of WinRM for the PowerShell doubles of tests/hyperv and tests/pvs.

Those doubles are runners (:class:`adapters.windows_remote.powershell.PSConnection`), not
HTTP servers (a WSMan/PSRP server is beyond a test double), so the faults of
:class:`tests.faults.proxy.FaultSchedule` are injected at that boundary as what pypsrp raises
for them: a status answer is ``WinRMTransportError("http", code, body)``, a stall past the
read timeout ``requests.ReadTimeout``, a reset or a connection closed unanswered ``requests.ConnectionError``
and a truncated answer ``requests.ChunkedEncodingError``. As through the HTTP proxy, statuses
and stalls come before the script runs (the host never sees it), resets, truncations and
unanswered closes after it ran (the host acted, the adapter does not know). The TLS certificate
change goes through the real proxy (tests/faults/test_faults_hyperv.py) with pypsrp itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from adapters.windows_remote.powershell import Endpoint, PSConnection, PSResult
from tests.faults.proxy import AFTER_FORWARDING, STATUS_OF, Fault, FaultSchedule, Injection

#: what a runner's "request" is called in the schedule and the figures
WSMAN = "/wsman"


class PowerShellDouble(Protocol):
    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> Any: ...

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult: ...


class FaultyWinRM:
    """``clients.connect = FaultyWinRM(double, schedule).connect``: the double behind faults."""

    def __init__(self, double: PowerShellDouble, schedule: FaultSchedule) -> None:
        self.double = double
        self.schedule = schedule
        self.injected: Counter[Fault] = Counter()
        self.injections: list[Injection] = []
        self.forwarded = 0
        self._seen: list[tuple[str, str]] = []

    # the runner interface
    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> PSConnection:
        self.double.connect(endpoint, user, password, timeout)
        return self

    def close(self) -> None:
        pass

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult:
        import requests
        from pypsrp.exceptions import WinRMTransportError

        # a request is the script and its values: the same again is the adapter retrying it
        request = (script, repr(sorted(parameters.items())))
        for earlier, seen in zip(self.injections, self._seen, strict=True):
            if not earlier.retried and seen == request:
                earlier.retried = True
        fault = self.schedule.draw("POST", WSMAN)
        if fault is not None:
            self.injected[fault] += 1
            self.injections.append(Injection(fault, "POST", WSMAN))
            self._seen.append(request)
        if fault in STATUS_OF:
            raise WinRMTransportError("http", STATUS_OF[fault], f"injected: {fault.value}")
        if fault is Fault.STALL:
            raise requests.exceptions.ReadTimeout("HTTPSConnectionPool: Read timed out.")
        self.forwarded += 1
        result = self.double.run(script, parameters)
        if fault is Fault.RESET_MID_BODY:
            raise requests.exceptions.ConnectionError(
                ConnectionResetError(104, "Connection reset by peer"))
        if fault is Fault.TRUNCATED:
            raise requests.exceptions.ChunkedEncodingError(
                "Connection broken: IncompleteRead(120 bytes read, 200 more expected)")
        if fault is Fault.UNANSWERED:
            raise requests.exceptions.ConnectionError(
                "('Connection aborted.', RemoteDisconnected('Remote end closed connection "
                "without response'))")
        assert fault is None or fault not in AFTER_FORWARDING
        return result

    # what a test reads (as tests.faults.proxy.FaultProxy)
    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    @property
    def retried(self) -> int:
        return sum(1 for injection in self.injections if injection.retried)

    def counts(self) -> dict[str, int]:
        return {f"winrm {f.value}": n for f, n in sorted(self.injected.items(), key=lambda i: i[0].value)}

    def heal(self) -> None:
        self.schedule.enabled = False
