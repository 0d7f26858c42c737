"""A few thousand random requests at ``/slack/events`` — odd headers and bodies unsigned,
random forms and mutated Slack payloads signed — never get a 5xx or log a traceback, and
the event loop stays responsive throughout (``/healthz`` loop lag under 100 ms)."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack import blocks as slack_blocks
from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, CHANNEL, MakeSlack, Slack
from tests.slack.slack_double import TEAM
from tests.slack.test_slack_edge import sign_bytes
from tests.slack.test_slack_tasks import start

FUZZ = settings(deadline=None, database=None, derandomize=True, print_blob=False,
                suppress_health_check=list(HealthCheck))
#: The issue's bound, throughout (a quiet 2-core machine measures p99 2-3 ms, worst about 5 ms).
#: The worst is the app's own: less the time the loop's thread was runnable but had no CPU (a CI
#: run once measured one 146 ms stall with p99 at 2.5 ms, the machine busy elsewhere).
MAX_LAG_P99_MS = 100.0
MAX_LAG_MS = 100.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                      children, max_size=4),
    max_leaves=12)
slack_words = st.sampled_from(["block_actions", "view_submission", "event_callback",
                               "url_verification", "app_home_opened", "shortcut", "message",
                               "intent_confirm", "intent_cancel", "task_cancel", "task_retry",
                               "home_publish", "publish_modal", "/publish", TEAM, "T0THEIRS",
                               ALICE, "help", "list", "status", ""])
odd_values = json_values | slack_words | st.lists(slack_words, max_size=2)


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each button of ``blocks`` (as the app built them) as a click reports it, by action id."""
    found = {}
    for index, block in enumerate(blocks):
        block_id = block.get("block_id", f"b{index}")  # Slack names the blocks the app left unnamed
        for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
            if element.get("type") == "button":
                found[element["action_id"]] = {**element, "block_id": block_id, "action_ts": "1.0"}
    return found


def clicked(slack: Slack, button: dict[str, Any], channel: str | None = CHANNEL) -> dict[str, Any]:
    payload = slack.click_payload(button["action_id"], button["value"], channel=channel)
    payload["actions"] = [button]
    return payload


async def seeds(slack: Slack) -> list[dict[str, Any]]:
    """Real payloads of every kind the app handles, to be mutated: built from the blocks the
    app sends, naming a live confirmation and a failed task, so the mutations reach the
    handlers past their lookups."""
    command = {k: v[0] for k, v in urllib.parse.parse_qs(slack.command_body("list")).items()}
    failed = await start(slack)
    assert (await slack.task_done(failed.id)).status == states.FAILED
    confirm = buttons((await slack.answer(await slack.command("win10-office")))["blocks"])
    withdraw = buttons((await slack.answer(await slack.command("win10-office")))["blocks"])
    task = buttons(slack_blocks.task_message(slack.store.get(failed.id)).payload()["blocks"])
    cancel = {**task[slack_blocks.ACTION_TASK_RETRY], "action_id": slack_blocks.ACTION_TASK_CANCEL}
    home = slack_blocks.home_view([("win10-office", ":computer:", "")], []).to_dict()
    modal = slack_blocks.publish_modal([("win10-office", "")], CHANNEL).to_dict()
    [input_block] = modal["blocks"]
    selected = {"type": input_block["element"]["type"], "selected_options": [
        {"value": o["value"], "text": o["text"]} for o in input_block["element"]["options"]]}
    submitted = {k: modal[k] for k in ("type", "callback_id", "private_metadata")}
    return [
        command,
        clicked(slack, confirm[slack_blocks.ACTION_CONFIRM]),
        clicked(slack, withdraw[slack_blocks.ACTION_DISMISS]),
        clicked(slack, task[slack_blocks.ACTION_TASK_RETRY]),
        clicked(slack, cancel),
        clicked(slack, buttons(home["blocks"])[slack_blocks.ACTION_HOME_PUBLISH], channel=None),
        {"type": "view_submission", "team": {"id": TEAM}, "user": {"id": ALICE, "team_id": TEAM},
         "view": {**submitted, "team_id": TEAM, "state": {"values": {
             input_block["block_id"]: {input_block["element"]["action_id"]: selected}}}}},
        {"type": "event_callback", "team_id": TEAM, "api_app_id": "A0001", "event_id": "Ev1",
         "event": {"type": "app_home_opened", "user": ALICE, "tab": "home"}},
    ]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths(child, (*prefix, index))
    return out


def mutate(payload: dict[str, Any], path: tuple[Any, ...], new: Any, drop: bool) -> dict[str, Any]:
    """``payload`` with the value at ``path`` (not empty) replaced by ``new``, or dropped."""
    copy = json.loads(json.dumps(payload))
    parent = copy
    for part in path[:-1]:
        parent = parent[part]
    if drop and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


class Client:
    """A plain blocking HTTP client, driven from the fuzzing thread while the app runs
    on the test's event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.lags: list[tuple[float, float]] = []
        self.started = time.monotonic()

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/slack/events", body=body, headers=headers)
            status = conn.getresponse().status
        finally:
            conn.close()
        self.statuses.append(status)
        if len(self.statuses) % 100 == 0:
            self.lags.append(self.lag_ms())
        assert status < 500, (status, body[:300], headers)
        return status

    def lag_ms(self) -> tuple[float, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            # the lag since the fuzzing began (not the app's start-up)
            window = max(0.05, time.monotonic() - self.started)
            conn.request("GET", f"/healthz?window={window:.2f}")
            health = json.loads(conn.getresponse().read())
            return float(health["loop_lag_own_ms"]), float(health["loop_lag_p99_ms"])
        finally:
            conn.close()


Request = tuple[bytes, dict[str, str], bool]


def generate(originals: list[dict[str, Any]]) -> list[Request]:
    """The requests, drawn up front: hypothesis's own work would otherwise compete with
    the event loop for the GIL while the lag is measured. (body, headers, unsigned)"""
    requests: list[Request] = []
    header_text = st.text(max_size=30).filter(lambda s: s.isprintable() and s.isascii())
    content_types = st.sampled_from([
        "application/x-www-form-urlencoded", "application/json", "text/plain",
        "application/x-www-form-urlencoded; charset=utf-16", "application/json; charset=klingon",
        "multipart/form-data; boundary=x"])

    @settings(FUZZ, max_examples=700)
    @given(body=st.binary(max_size=400), timestamp=header_text | st.just(str(int(time.time()))),
           signature=header_text | st.just("v0=" + "0" * 64), content_type=content_types,
           encoding=st.sampled_from(["", "identity", "gzip", "deflate", "br", "x"]))
    def unsigned(body: bytes, timestamp: str, signature: str, content_type: str, encoding: str) -> None:
        headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
                   "Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        requests.append((body, headers, True))

    @settings(FUZZ, max_examples=600)
    @given(fields=st.dictionaries(st.sampled_from(["payload", "command", "user_id", "team_id", "text",
                                                   "trigger_id", "type", "channel_id", "ssl_check"])
                                  | st.text(max_size=8), st.text(max_size=60) | slack_words, max_size=6),
           content_type=content_types)
    def signed_forms(fields: dict[str, str], content_type: str) -> None:
        body = urllib.parse.urlencode(fields).encode()
        requests.append((body, {"Content-Type": content_type}, False))

    @settings(FUZZ, max_examples=2000)
    @given(data=st.data(), as_form=st.booleans())
    def signed_payloads(data: st.DataObject, as_form: bool) -> None:
        payload = data.draw(st.sampled_from(originals))
        for _ in range(data.draw(st.integers(1, 3))):
            # not the root: a payload that is not an object never passes the edge (tested there)
            path = data.draw(st.sampled_from(paths(payload)[1:]))
            payload = mutate(payload, path, data.draw(odd_values), data.draw(st.booleans()))
        text = json.dumps(payload)
        if as_form:
            body = urllib.parse.urlencode({"payload": text}).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body, content_type = text.encode(), "application/json"
        requests.append((body, {"Content-Type": content_type}, False))

    unsigned()
    signed_forms()
    signed_payloads()
    return requests


def replay(requests: list[Request], client: Client) -> None:
    client.started = time.monotonic()
    for body, headers, unsigned in requests:
        # signed now: the timestamp must be fresh
        status = client.post(body, headers if unsigned else {**headers, **sign_bytes(body)})
        assert not unsigned or 400 <= status < 500, (status, body[:300], headers)


@pytest.mark.timeout(300)
async def test_fuzzed_requests_never_fail_or_stall(make_slack: MakeSlack,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    slack = await make_slack(with_fake("fail_upload: true"))
    assert slack.service.port is not None
    client = Client(slack.service.port)
    originals = await seeds(slack)
    requests = await asyncio.to_thread(generate, originals)
    # hypothesis leaves many objects behind: a full collection of them, triggered in the client's
    # thread mid-replay, held the GIL for 0.3-0.5 s. Collect now and keep them out of later ones.
    gc.collect()
    gc.freeze()
    await asyncio.sleep(0.1)  # the lag of drawing them (GIL) is sampled before the replay
    started = time.monotonic()
    try:
        await asyncio.to_thread(replay, requests, client)
    finally:
        gc.unfreeze()
    await slack.idle()
    elapsed = time.monotonic() - started
    assert len(client.statuses) == len(requests) >= 3000
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    monitor = slack.service.monitor
    worst, p99 = monitor.worst_own(elapsed) * 1000, monitor.p99(elapsed) * 1000
    print(f"{len(requests)} requests in {elapsed:.1f} s; loop lag p99 {p99:.1f} ms, worst {worst:.1f} ms "
          f"less the waits for a CPU ({monitor.worst(elapsed) * 1000:.1f} ms with them)")
    assert max([p for _, p in client.lags] + [p99]) < MAX_LAG_P99_MS, (client.lags, p99)
    assert max([w for w, _ in client.lags] + [worst]) < MAX_LAG_MS, (client.lags, worst)
