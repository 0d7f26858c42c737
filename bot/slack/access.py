"""Who may publish what, from where, and who may confirm: the access rules of
layerbot.yml (``access:`` on a template and on its connector; both must allow).

The decisions are pure functions; resolving user-group membership needs the Slack
Web API (usergroups.users.list) and is cached by :class:`GroupDirectory`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import AccessConfig
from bot import messages
from bot.catalog import Catalog
from bot.store.interface import Store

log = logging.getLogger(__name__)

ApprovalRule = Literal["requester", "second_person"]
SLACK_ID = re.compile(r"[A-Z0-9]{2,32}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


def check_access(access: AccessConfig | None, kind: str, name: str, *, user: str,
                 groups: set[str], channel: str | None, check_channel: bool = True) -> Decision:
    """One ``access:`` block. Empty lists put no restriction on that dimension; a user is
    allowed when listed in ``users`` or a member of one of ``user_groups``."""
    if access is None:
        return ALLOW
    if (access.users or access.user_groups) and not (
        user in access.users or groups & set(access.user_groups)
    ):
        return Decision(False, messages.reason_user(kind, name))
    if check_channel and access.channels and channel not in access.channels:
        return Decision(False, messages.reason_channel(kind, name, access.channels))
    return ALLOW


def may_publish(catalog: Catalog, template: str, *, user: str, groups: set[str],
                channel: str | None, check_channel: bool = True) -> Decision:
    """May ``user`` publish ``template`` from ``channel`` (None: App Home)? Without
    ``check_channel`` only the user matters (cancel/retry of an existing task)."""
    t = catalog.templates.get(template)
    if t is None:
        return Decision(False, messages.reason_unknown_template(template))
    decision = check_access(t.access, "template", template, user=user, groups=groups,
                            channel=channel, check_channel=check_channel)
    if not decision.allowed:
        return decision
    connector = catalog.connectors.get(t.connector)
    access = connector.access if connector is not None else None
    return check_access(access, "connector", t.connector, user=user, groups=groups,
                        channel=channel, check_channel=check_channel)


def _access_blocks(catalog: Catalog, templates: Iterable[str]) -> Iterator[AccessConfig]:
    """The ``access:`` blocks of the templates and their connectors (those that have one)."""
    for name in templates:
        t = catalog.templates.get(name)
        if t is None:
            continue
        connector = catalog.connectors.get(t.connector)
        for access in (t.access, connector.access if connector else None):
            if access is not None:
                yield access


def approval_rule(catalog: Catalog, templates: Iterable[str]) -> ApprovalRule:
    """The strictest rule of the templates and their connectors."""
    if any(a.approval == "second_person" for a in _access_blocks(catalog, templates)):
        return "second_person"
    return "requester"


def approvers(catalog: Catalog, templates: Iterable[str], requester: str) -> list[str]:
    """Who an approval card speaks to: the users (``<@U1>``) and user groups
    (``<!subteam^S1>``) the templates' and their connectors' ``access:`` name, but the
    requester; none when no access block names anyone (anyone allowed may approve)."""
    users: dict[str, None] = {}
    groups: dict[str, None] = {}
    for access in _access_blocks(catalog, templates):
        users.update(dict.fromkeys(u for u in access.users if u != requester))
        groups.update(dict.fromkeys(access.user_groups))
    # a Slack id is [A-Z0-9]; anything else in layerbot.yml matches no one, and is not markup
    return ([f"<@{u}>" for u in users if SLACK_ID.fullmatch(u)]
            + [f"<!subteam^{g}>" for g in groups if SLACK_ID.fullmatch(g)])


def may_confirm(rule: ApprovalRule, *, requester: str, clicker: str) -> Decision:
    """Who may click *Publish Layered Images* (besides being allowed to publish)."""
    if rule == "second_person" and clicker == requester:
        return Decision(False, messages.reason_second_person(requester))
    if rule == "requester" and clicker != requester:
        return Decision(False, messages.reason_not_requester(requester))
    return ALLOW


def groups_in_use(catalog: Catalog) -> set[str]:
    """Every user group some ``access:`` block names."""
    out: set[str] = set()
    for t in catalog.templates.values():
        if t.access:
            out.update(t.access.user_groups)
    for c in catalog.connectors.values():
        if c.access:
            out.update(c.access.user_groups)
    return out


def record(store: Store, user: str, action: str, target: str, decision: Decision) -> None:
    store.audit(user, action, target, decision.allowed, decision.reason or "allowed")


class GroupDirectory:
    """Which of the catalog's user groups a user belongs to, via usergroups.users.list,
    cached for ``ttl`` seconds per group."""

    def __init__(self, client: AsyncWebClient, ttl: float = 300.0) -> None:
        self.client = client
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_of(self, user: str, candidates: Iterable[str]) -> set[str]:
        groups = sorted(candidates)
        members = await asyncio.gather(*(self._group(g) for g in groups))
        return {g for g, m in zip(groups, members, strict=True) if user in m}

    async def _group(self, group: str) -> frozenset[str]:
        cached = self._members.get(group)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            resp = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:  # fail closed: not a member
            log.warning("usergroups.users.list %s failed: %s", group, exc.response.get("error"))
            return frozenset()
        members = frozenset(resp.get("users") or [])
        self._members[group] = (time.monotonic(), members)
        return members
