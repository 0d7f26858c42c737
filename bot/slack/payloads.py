"""The shape of what Slack sends, checked before slack-bolt routes it.

bolt indexes into a payload as Slack documents it (``body["actions"][0]``, ``"id" in
body["enterprise"]``...) and the handlers read the fields they need; a signed but malformed
payload would fail deep inside either, in the background, with a traceback. These models
name every field bolt's routing and context extraction and the handlers read, with its
type, so such a payload is refused up front with the key path that was wrong. Unknown
fields are allowed: Slack adds fields over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


Text = StrictStr | None
#: Where the answer to an interaction goes (hooks.slack.com).
Url = Annotated[str, StringConstraints(strict=True, pattern=r"^https?://[^\s/]+/\S*$")]


class Ref(_Open):
    """``team``, ``enterprise``, ``user``, ``channel`` as objects."""

    id: Text = None
    team_id: Text = None
    enterprise_id: Text = None


class Authorization(_Open):
    team_id: Text = None
    enterprise_id: Text = None
    user_id: Text = None
    is_enterprise_install: StrictBool | StrictStr | None = None


class Message(_Open):
    user: StrictStr | Ref | None = None
    thread_ts: Text = None
    bot_id: Text = None
    subtype: Text = None


def _object_if_present(value: object) -> object:
    """bolt reads these as ``body.get(key, {}).get(...)``: absent is fine, null is not."""
    if value is None:
        raise ValueError("must be an object when present")
    return value


class Event(Message):
    type: StrictStr
    function: dict[str, Any] | None = None
    tokens: dict[str, Any] | None = None
    channel: StrictStr | Ref | None = None
    channel_type: Text = None
    tab: Text = None
    team: StrictStr | Ref | None = None
    enterprise: StrictStr | Ref | None = None
    callback_id: Text = None
    message: Message | None = None
    previous_message: Message | None = None
    item: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    workflow_step: dict[str, Any] | None = None

    _not_null = field_validator("function", "tokens", mode="before")(_object_if_present)


class Action(_Open):
    action_id: StrictStr
    block_id: Text = None
    type: Text = None
    value: Text = None


class Option(_Open):
    value: StrictStr


class InputState(_Open):
    """One input's value in a view's state (a multi-select's ``selected_options``)."""

    type: Text = None
    selected_options: list[Option] | None = None
    #: a conversations_select's choice
    selected_conversation: Text = None


class ViewState(_Open):
    #: block id -> action id -> that input's state
    values: dict[str, dict[str, InputState]] = Field(default_factory=dict)


class View(_Open):
    callback_id: Text = None
    type: Text = None
    team_id: Text = None
    private_metadata: Text = None
    state: ViewState | None = None


class Envelope(_Open):
    """Every top-level field bolt reads before a listener runs."""

    type: Text = None
    token: Text = None
    team_id: Text = None
    enterprise_id: Text = None
    user_id: Text = None
    channel_id: Text = None
    command: Text = None
    text: Text = None
    trigger_id: Text = None
    response_url: Url | None = None
    callback_id: Text = None
    action_id: Text = None
    is_enterprise_install: StrictBool | StrictStr | None = None
    team: StrictStr | Ref | None = None
    enterprise: StrictStr | Ref | None = None
    user: StrictStr | Ref | None = None
    channel: StrictStr | Ref | None = None
    container: dict[str, Any] | None = None
    authorizations: list[Authorization] | None = None
    event: Event | None = None
    actions: list[Action] | None = Field(default=None, min_length=1)
    view: View | None = None
    message: Message | None = None
    previous_message: Message | None = None
    item: dict[str, Any] | None = None
    assistant_thread: dict[str, Any] | None = None
    function_data: dict[str, Any] | None = None
    workflow_step: dict[str, Any] | None = None

    _not_null = field_validator("event", "view", mode="before")(_object_if_present)


class Actor(Ref):
    id: StrictStr


class SlashCommand(Envelope):
    command: StrictStr
    user_id: StrictStr
    text: StrictStr = ""
    trigger_id: StrictStr
    response_url: Url


class BlockActions(Envelope):
    user: Actor
    #: a click in a message names its channel as an object (commands send ``channel_id``)
    channel: Ref | None = None
    actions: list[Action] = Field(min_length=1)


class SubmittedView(View):
    callback_id: StrictStr
    type: StrictStr


class ViewSubmission(Envelope):
    user: Actor
    view: SubmittedView


class AppHomeOpened(Event):
    user: StrictStr


class EventCallback(Envelope):
    event: Event


class HomeOpenedCallback(Envelope):
    event: AppHomeOpened


class Malformed(ValueError):
    """A payload bolt or the handlers cannot read; the message names the key path."""


def check_shape(body: object) -> Envelope:
    """``body`` as Slack documents it, or :class:`Malformed` naming the first bad key."""
    if not isinstance(body, dict):
        raise Malformed(f"payload: expected a JSON object, got {_kind(body)}")
    try:
        envelope = Envelope.model_validate(body)
        if envelope.command is not None:
            return SlashCommand.model_validate(body)
        if envelope.type == "block_actions":
            return BlockActions.model_validate(body)
        if envelope.type == "view_submission":
            return ViewSubmission.model_validate(body)
        if envelope.type == "event_callback":
            checked = EventCallback.model_validate(body)
            if checked.event.type == "app_home_opened":
                return HomeOpenedCallback.model_validate(body)
            return checked
        return envelope
    except ValidationError as exc:
        raise Malformed(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """The first error as ``key.path[0]: what was expected, got what`` (the value itself is
    left out: it may be long, and it is the sender's data)."""
    error = exc.errors(include_url=False, include_input=True)[0]
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part in ("str", "Ref", "bool", "dict[str,any]") or "[" in str(part)):
            path += f".{part}" if path else str(part)
    got = "nothing" if error["type"] == "missing" else _kind(error.get("input"))
    return f"{path or 'payload'}: {error['msg'].lower()}, got {got}"


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


@dataclass(frozen=True)
class Workspace:
    """The installed workspace (from auth.test): requests from any other are refused.
    An org-wide install (Enterprise Grid) accepts every workspace of its enterprise."""

    team_id: str | None
    enterprise_id: str | None = None
    org_install: bool = False

    @classmethod
    def from_auth_test(cls, auth: dict[str, Any]) -> Workspace:
        return cls(team_id=auth.get("team_id") or None,
                   enterprise_id=auth.get("enterprise_id") or None,
                   org_install=bool(auth.get("is_enterprise_install")))

    def foreign(self, envelope: Envelope) -> str | None:
        """Why ``envelope`` is not from this workspace, or None when it is."""
        teams, enterprises = _origin(envelope)
        for enterprise in enterprises:
            if enterprise != self.enterprise_id:
                return f"enterprise {enterprise} is not the installed one ({self.enterprise_id or 'none'})"
        if self.org_install:
            return None if enterprises else "no enterprise id in the request"
        if not teams:
            return "no workspace (team) id in the request"
        for team in teams:
            if team != self.team_id:
                return f"workspace {team} is not the installed one ({self.team_id})"
        return None


def _origin(envelope: Envelope) -> tuple[set[str], set[str]]:
    """Every workspace and enterprise id the request names (who sent it, whose user acted)."""
    teams = {envelope.team_id}
    enterprises = {envelope.enterprise_id}
    for ref, ids in ((envelope.team, teams), (envelope.enterprise, enterprises)):
        if isinstance(ref, str):
            ids.add(ref)
        elif ref is not None:
            ids.add(ref.id)
    for ref in (envelope.team, envelope.user):
        if isinstance(ref, Ref):
            if ref is envelope.user:
                teams.add(ref.team_id)
            enterprises.add(ref.enterprise_id)
    if envelope.view is not None:
        teams.add(envelope.view.team_id)
    teams.discard(None)
    enterprises.discard(None)
    return teams, enterprises  # type: ignore[return-value]


def actor(body: object) -> str:
    """The acting user's id for the audit, as far as the payload says."""
    if not isinstance(body, dict):
        return "?"
    user = body.get("user_id") or body.get("user")
    if isinstance(user, dict):
        user = user.get("id")
    if not isinstance(user, str) and isinstance(body.get("event"), dict):
        user = body["event"].get("user")
    return user[:40] if isinstance(user, str) and user else "?"
