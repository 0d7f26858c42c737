"""The Slack edge answers every bad request with a 4xx before any expensive work: no 500,
no traceback, and a compressed body is never inflated."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import zlib

import pytest

from bot.slack import blocks as slack_blocks
from bot.slack.edge import MAX_BODY
from bot.slack.handlers import clicked_channel, selected_templates
from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, CHANNEL, SECRET, MakeSlack, Slack, button_value
from tests.slack.slack_double import TEAM
from tests.slack.test_slack_tasks import start

FORM = "application/x-www-form-urlencoded"


def sign_bytes(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest}


async def post_raw(slack: Slack, body: bytes, headers: dict[str, str]) -> int:
    async with slack.session.post(slack.url, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


def gzip_zeros(mib: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return b"".join(packer.compress(bytes(1 << 20)) for _ in range(mib)) + packer.flush()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_unsigned_odd_requests_get_401_not_500(make_slack: MakeSlack,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack()
    body = slack.command_body("win10-office").encode()
    forged = {"X-Slack-Signature": "v0=" + "0" * 64}
    attempts: dict[str, tuple[bytes, dict[str, str]]] = {
        f"timestamp {ts[:12]!r}": (body, {**forged, "X-Slack-Request-Timestamp": ts,
                                          "Content-Type": FORM})
        for ts in ("notanumber", "nan", "1.5", "9" * 400, "-1", "١٢٣")
    }
    now = {**forged, "X-Slack-Request-Timestamp": str(int(time.time()))}
    attempts["not UTF-8"] = (b"payload=\xff\xfe\xfa", {**now, "Content-Type": FORM})
    attempts["utf-16"] = (body.decode().encode("utf-16"), {**now, "Content-Type": FORM + "; charset=utf-16"})
    attempts["unknown charset"] = (body, {**now, "Content-Type": FORM + "; charset=klingon"})
    attempts["non-ASCII signature"] = (body, {**now, "X-Slack-Signature": "v0=é" + "0" * 63})
    for why, (data, headers) in attempts.items():
        assert await post_raw(slack, data, headers) == 401, why
    assert tracebacks(caplog) == []


async def test_signed_but_undecodable_bodies_get_400(make_slack: MakeSlack,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack()
    body = slack.command_body("win10-office")
    attempts = {
        "not UTF-8": (b"payload=\xff\xfe\xfa", FORM),
        "utf-16": (body.encode("utf-16"), FORM + "; charset=utf-16"),
        "unknown charset": (body.encode(), FORM + "; charset=klingon"),
    }
    for why, (data, content_type) in attempts.items():
        assert await post_raw(slack, data, {**sign_bytes(data), "Content-Type": content_type}) == 400, why
    await slack.idle()
    assert tracebacks(caplog) == []
    assert slack.double.of("response_url") == []
    # signed, so audited (unsigned ones are only counted)
    rows = list(slack.store.rows("SELECT user, action, reason FROM audit WHERE allowed = 0"))
    assert [(r["user"], r["action"]) for r in rows] == [("?", "request")] * len(attempts)
    assert [r["reason"] for r in rows] == ["the body is not valid UTF-8 (byte 8)",
                                          "the body must be UTF-8 (the charset is not)",
                                          "the body must be UTF-8 (the charset is not)"]


async def test_compressed_bodies_are_refused_unread(make_slack: MakeSlack,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack()
    assert await post_raw(slack, b"definitely not gzip",
                          {"Content-Encoding": "gzip", "Content-Type": FORM}) == 415
    # 64 MiB of zeros in about 64 KiB: inflating it would stall the event loop
    bomb = await asyncio.to_thread(gzip_zeros, 64)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    for encoding in ("gzip", "deflate", "br", "identity, gzip"):
        assert await post_raw(slack, bomb, {"Content-Encoding": encoding, "Content-Type": FORM,
                                            **sign_bytes(bomb)}) == 415, encoding
    await asyncio.sleep(0.5)  # whatever the server does with the unread rest, it is done now
    window = time.monotonic() - started + 0.1
    assert slack.service.monitor.worst(window) < 0.25  # generous: old code lagged seconds
    assert tracebacks(caplog) == []


async def test_bodies_over_the_cap_get_413(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    big = b"payload=" + b"a" * MAX_BODY
    assert await post_raw(slack, big, {**sign_bytes(big), "Content-Type": FORM}) == 413

    async def chunks() -> object:  # no Content-Length: the cap holds while reading
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"a" * 65536

    async with slack.session.post(slack.url, data=chunks(), headers={
            **sign_bytes(b""), "Content-Type": FORM}) as resp:
        assert resp.status == 413
    url = slack.url.replace("/slack/events", "/healthz")
    async with slack.session.get(url) as resp:
        assert (await resp.json())["refused"] == {"413": 2}


def malformed_bodies(slack: Slack) -> dict[str, tuple[str, str]]:
    def form(payload: str) -> tuple[str, str]:
        return urllib.parse.urlencode({"payload": payload}), FORM

    def click(**changes: object) -> tuple[str, str]:
        payload = slack.click_payload("intent_confirm", "i123")
        for key, value in changes.items():
            if key == "value":
                payload["actions"][0]["value"] = value
            else:
                payload[key] = value
        return form(json.dumps(payload))

    command = urllib.parse.parse_qs(slack.command_body("list"))
    no_user = {k: v[0] for k, v in command.items() if k != "user_id"}
    return {
        "payload={": form("{"),
        "null": form("null"),
        "1": form("1"),
        "NaN": form("NaN"),
        "a list": form("[]"),
        "100,000 nested brackets": ("[" * 100_000 + "]" * 100_000, "application/json"),
        "nested in an object": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "application/json"),
        "nested in a form": form("[" * 40_000 + "]" * 40_000),
        "JSON body null": ("null", "application/json"),
        "type 5": click(type=5),
        "type a list": click(type=["block_actions"]),
        "type an object": click(type={"x": 1}),
        "action value a list": click(value=["i123"]),
        "action value an object": click(value={"id": "i123"}),
        "no actions": click(actions=[]),
        "actions not a list": click(actions="x"),
        "user a number": click(user=7),
        "enterprise a number": click(enterprise=7),
        "authorizations of numbers": click(authorizations=[1]),
        "command without user_id": (urllib.parse.urlencode(no_user), FORM),
        "event not an object": (json.dumps({"type": "event_callback", "team_id": "T0001",
                                            "event": "app_home_opened"}), "application/json"),
        # bolt reads body.get("event", {}).get(...) on every request, whatever its type
        "event null": (json.dumps({"type": "block_suggestion", "team_id": "T0001", "event": None}),
                       "application/json"),
        "view null": click(view=None),
        "home opened by nobody": (json.dumps({"type": "event_callback", "team_id": "T0001",
                                              "event": {"type": "app_home_opened", "user": None}}),
                                  "application/json"),
    }


async def test_signed_malformed_payloads_get_400_and_are_audited(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack()
    bodies = malformed_bodies(slack)
    for why, (body, content_type) in bodies.items():
        resp = await slack.post(body, content_type)
        assert resp.status == 400, why
    await slack.idle()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert slack.double.of("response_url") == []
    rows = list(slack.store.rows("SELECT * FROM audit WHERE allowed = 0"))
    assert len(rows) == len(bodies)
    reasons = "\n".join(r["reason"] for r in rows)
    assert "actions[0].value: input should be a valid string, got a list" in reasons
    assert "user_id: field required" in reasons
    assert "nested too deeply" in reasons


async def test_other_workspaces_are_refused_and_audited(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    body = slack.command_body("win10-office").replace("team_id=T0001", "team_id=T0THEIRS")
    assert (await slack.post(body, FORM)).status == 403
    click = slack.click_payload("intent_confirm", "i123")
    click["user"]["team_id"] = "T0THEIRS"
    assert (await slack.post(slack.payload_body(click), FORM)).status == 403
    click = slack.click_payload("intent_confirm", "i123")
    click["enterprise"] = {"id": "E0THEIRS"}
    assert (await slack.post(slack.payload_body(click), FORM)).status == 403
    await slack.idle()
    assert slack.double.of("response_url") == []
    rows = list(slack.store.rows("SELECT user, action, reason FROM audit WHERE allowed = 0"))
    assert [r["user"] for r in rows] == [ALICE] * 3
    assert "workspace T0THEIRS is not the installed one (T0001)" in rows[0]["reason"]
    assert "enterprise E0THEIRS" in rows[2]["reason"]
    # the installed workspace still gets its answer
    answer = await slack.answer(await slack.command("list"))
    assert "win10-office" in json.dumps(answer)



async def test_only_what_bolt_answers_itself_skips_the_workspace_check(make_slack: MakeSlack) -> None:
    slack = await make_slack()

    def foreign_command(**extra: str) -> str:
        fields = dict(urllib.parse.parse_qsl(slack.command_body("help")))
        return urllib.parse.urlencode({**fields, "team_id": "T0THEIRS", **extra})

    for ssl_check in ("0", "", "true", "1 "):
        assert (await slack.post(foreign_command(ssl_check=ssl_check), FORM)).status == 403, ssl_check
    # bolt answers these before any listener runs: an empty 200, and the challenge
    assert (await slack.post(foreign_command(ssl_check="1"), FORM)).status == 200
    verification = json.dumps({"type": "url_verification", "challenge": "c-42", "team_id": "T0THEIRS",
                               "command": "/publish", "user_id": ALICE, "text": "help",
                               "trigger_id": "t", "response_url": slack.double.new_response_url()})
    async with slack.session.post(slack.url, data=verification.encode(), headers={
            **sign_bytes(verification.encode()), "Content-Type": "application/json"}) as resp:
        assert resp.status == 200 and "c-42" in await resp.text()
    await slack.idle()
    assert slack.double.of("response_url") == []  # no command ran
    rows = list(slack.store.rows("SELECT reason FROM audit WHERE allowed = 0"))
    assert len(rows) == 4 and all("workspace T0THEIRS" in r["reason"] for r in rows)


async def test_a_modal_state_of_another_shape_is_refused_not_crashed(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack()
    view = slack_blocks.publish_modal([("win10-office", "")], CHANNEL).to_dict()

    def submission(selected: object) -> str:
        state = {"values": {slack_blocks.BLOCK_TEMPLATES: {slack_blocks.ACTION_TEMPLATES: selected}}}
        return slack.payload_body({
            "type": "view_submission", "team": {"id": TEAM}, "user": {"id": ALICE, "team_id": TEAM},
            "view": {**view, "team_id": TEAM, "state": state}})

    for selected in ("x", ["x"], 7, {"selected_options": "x"}, {"selected_options": [{"value": 1}]},
                     {"selected_options": ["win10-office"]}):
        assert (await slack.post(submission(selected), FORM)).status == 400, selected
    await slack.idle()
    assert tracebacks(caplog) == []
    reasons = [r["reason"] for r in slack.store.rows("SELECT reason FROM audit WHERE allowed = 0")]
    assert reasons[0] == ("malformed payload: view.state.values.templates.selected: "
                          "input should be a valid dictionary or instance of inputstate, got a string")
    assert "view.state.values.templates.selected.selected_options[0].value" in reasons[4]
    # the modal as Slack submits it still asks for a confirmation
    good = {"type": "multi_static_select", "selected_options": [{"value": "win10-office"}]}
    assert (await slack.post(submission(good), FORM)).status == 200
    await slack.idle()
    [card] = slack.double.of("chat.postEphemeral", channel=CHANNEL, user=ALICE)
    assert button_value(card.params["blocks"], slack_blocks.ACTION_CONFIRM)


async def test_a_click_whose_channel_is_not_an_object_is_refused_not_crashed(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack(with_fake("fail_upload: true"))
    task = await start(slack)
    assert (await slack.task_done(task.id)).status == states.FAILED
    for action_id, value in ((slack_blocks.ACTION_TASK_RETRY, task.id),
                             (slack_blocks.ACTION_CONFIRM, "i123")):
        click = slack.click_payload(action_id, value)
        click["channel"] = CHANNEL
        assert (await slack.post(slack.payload_body(click), FORM)).status == 400, action_id
    await slack.idle()
    assert tracebacks(caplog) == []
    reasons = [r["reason"] for r in slack.store.rows("SELECT reason FROM audit WHERE allowed = 0")]
    assert reasons[-2:] == ["malformed payload: channel: input should be a valid dictionary"
                            " or instance of ref, got a string"] * 2


def test_handlers_read_odd_fields_as_absent() -> None:
    for channel in ("COPS", 7, ["COPS"], {"id": 7}, {"id": ""}, None):
        assert clicked_channel({"channel": channel}) is None, channel
    assert clicked_channel({"channel": {"id": "COPS"}}) == "COPS"
    for state in ("x", {"values": "x"}, {"values": {"templates": {"selected": "x"}}},
                  {"values": {"templates": {"selected": {"selected_options": "x"}}}}):
        assert selected_templates({"state": state}) == [], state
    options = [{"value": "a"}, "b", {"value": 3}, {"value": "c"}]
    assert selected_templates({"state": {"values": {"templates": {"selected": {
        "selected_options": options}}}}}) == ["a", "c"]
