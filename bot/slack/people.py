"""Display names of Slack users (users.info), cached: ``status TASK`` shows who did what by
name where a stored event text holds a bare user id."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class UserDirectory:
    """id -> display name via users.info, cached for ``ttl`` seconds per user; a user Slack
    does not know (or an error) keeps its id, and is asked again next time."""

    def __init__(self, client: AsyncWebClient, ttl: float = 3600.0) -> None:
        self.client = client
        self.ttl = ttl
        self._names: dict[str, tuple[float, str]] = {}

    async def names(self, users: Iterable[str]) -> dict[str, str]:
        ids = sorted({u for u in users if u})
        found = await asyncio.gather(*(self._name(u) for u in ids))
        return {u: name for u, name in zip(ids, found, strict=True) if name}

    async def _name(self, user: str) -> str | None:
        cached = self._names.get(user)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            resp = await self.client.users_info(user=user)
        except SlackApiError as exc:
            log.info("users.info %s failed: %s", user, exc.response.get("error"))
            return None
        info = resp.get("user") or {}
        profile = info.get("profile") or {}
        name = str(profile.get("display_name") or info.get("real_name") or info.get("name") or "")
        if name:
            self._names[user] = (time.monotonic(), name)
        return name or None


def name_users(text: str, names: Mapping[str, str]) -> str:
    """Escaped mrkdwn ``text`` with each id of ``names``, bare or as an escaped mention
    (``&lt;@U1&gt;``: an event text, escaped, would show it raw), replaced by ``@name``. A live
    ``<@U1>`` mention is left: Slack shows it by name. ``names`` must be mrkdwn-escaped."""
    for user, name in names.items():
        pattern = rf"&lt;@{re.escape(user)}&gt;|(?<![<@\w]){re.escape(user)}(?!\w)"
        text = re.sub(pattern, lambda _, n=name: "@" + n, text)
    return text
