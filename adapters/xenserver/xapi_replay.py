"""A session call's XML-RPC requests, answered again from what xapi already said.

A call given ``session.xenapi`` may make several requests (``VBD.create``, a read, then
``VIF.create``). When one of them is refused unread (HTTP 429, 503), the session runs the
whole call again after its back-off; the requests that were already answered must not be
sent twice (a second VBD), so a :class:`Journal` keeps their answers, in order, and hands
them back on the next run: only the refused request and the ones after it reach xapi.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Journal:
    """The answers of one session call's requests, for the runs of that call."""

    def __init__(self) -> None:
        self._answers: list[tuple[str, tuple[Any, ...], Any]] = []
        self._next = 0

    def replaying(self, client: Any) -> XenApi:
        """``client.xenapi`` for one run of the call: from its first request again."""
        self._next = 0
        return XenApi(lambda method, params: self.answer(
            method, params, lambda: client.xenapi_request(method, params)))

    def answer(self, method: str, params: tuple[Any, ...], send: Callable[[], Any]) -> Any:
        if self._next < len(self._answers):
            recorded, recorded_params, value = self._answers[self._next]
            if (recorded, recorded_params) == (method, params):
                self._next += 1
                return value
            # this run took another path than the last (the call is not a pure function of
            # xapi's answers): nothing recorded from here on describes it
            del self._answers[self._next:]
        value = send()
        self._answers.append((method, params, value))
        self._next += 1
        return value


class XenApi:
    """What ``session.xenapi`` is: ``x.VDI.create(record)`` sends ``("VDI.create", (record,))``."""

    def __init__(self, send: Callable[[str, tuple[Any, ...]], Any], name: str = "") -> None:
        self._send = send
        self._name = name

    def __getattr__(self, name: str) -> XenApi:
        if name.startswith("__"):
            raise AttributeError(name)
        return XenApi(self._send, f"{self._name}.{name}" if self._name else name)

    def __call__(self, *params: Any) -> Any:
        return self._send(self._name, params)
