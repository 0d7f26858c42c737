"""Block builders: Slack's limits hold for big inputs, catalog text cannot inject markup."""

from __future__ import annotations

import dataclasses

import pytest
from slack_sdk.models.blocks import SectionBlock

from bot.runner.planning import PublishPlan
from bot.slack import blocks as sb
from bot.slack.blocks import Message, TooManyBlocks

PLAN = PublishPlan(template="win10-office", icon=":computer:", description="Windows <!channel> & co",
                   os_layer="base-os", app_layers=["office"], platform_layer="vda",
                   connector="folder", platform="Local folder", size_gib=1, filesystem="ext4",
                   disk_format="qcow2", scripts=["setup.sh"], cache_hit=True)


def plans(n: int) -> list[PublishPlan]:
    return [dataclasses.replace(PLAN, template=f"t{i:03d}") for i in range(n)]


@pytest.mark.parametrize("n", [1, sb.DETAILED_CARD_TEMPLATES, sb.DETAILED_CARD_TEMPLATES + 1,
                               sb.MAX_CARD_TEMPLATES])
def test_confirm_card_stays_under_50_blocks(n: int) -> None:
    payload = sb.confirm_card(plans(n), "iabc", "UALICE", second_person=True,
                              ttl_minutes=15).payload()
    assert 0 < len(payload["blocks"]) <= 50
    assert payload["text"]


def test_too_many_templates_are_refused() -> None:
    with pytest.raises(TooManyBlocks):
        sb.confirm_card(plans(sb.MAX_CARD_TEMPLATES + 1), "iabc", "UALICE", second_person=False,
                        ttl_minutes=15)
    with pytest.raises(TooManyBlocks):
        Message("x", [SectionBlock(text="x") for _ in range(51)]).payload()


def test_catalog_text_is_escaped() -> None:
    text = str(sb.confirm_card([PLAN], "iabc", "UALICE", second_person=False,
                               ttl_minutes=15).payload())
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; co" in text
    assert "yes, a cached disk is reused" in text


def test_long_texts_are_clipped_to_slacks_limits() -> None:
    long = dataclasses.replace(PLAN, description="d" * 5000, template="n" * 200)
    payload = sb.confirm_card([long], "iabc", "UALICE", second_person=False,
                              ttl_minutes=15).payload()
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in payload["blocks"])
    listing = sb.list_message([(f"t{i}", ":x:", "d" * 200, True) for i in range(2000)]).payload()
    assert len(listing["blocks"]) <= 50


def test_modal_and_home_views_validate() -> None:
    modal = sb.publish_modal([(f"t{i}", "d" * 100) for i in range(150)], "C1").to_dict()
    assert len(modal["blocks"][0]["element"]["options"]) == 100
    home = sb.home_view([(f"t{i}", ":x:", "d") for i in range(200)], []).to_dict()
    assert len(home["blocks"]) <= 100
