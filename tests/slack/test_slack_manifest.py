"""manifest.yml is a complete Slack app manifest that matches what the app does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.slack import blocks as slack_blocks

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"


@pytest.fixture
def manifest() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_manifest_validates_against_slacks_schema(manifest: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not here (slackapi/manifest-schema, MIT)")
    import jsonschema

    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))


def test_manifest_declares_what_the_app_uses(manifest: dict[str, Any]) -> None:
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/publish"
    assert command["description"] and command["usage_hint"]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    urls = [command["url"], settings["interactivity"]["request_url"],
            settings["event_subscriptions"]["request_url"]]
    assert all(u.startswith("https://") and u.endswith("/slack/events") for u in urls)
    assert settings["socket_mode_enabled"] is False
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {"commands", "chat:write", "chat:write.public", "usergroups:read",
                      "users:read"}


def test_action_ids_fit_slack_limits() -> None:
    ids = [v for k, v in vars(slack_blocks).items() if k.startswith(("ACTION_", "VIEW_"))]
    assert ids and all(0 < len(i) <= 255 for i in ids)
