"""/publish plans in the planner's process (bot/runner/planner.py), not in serve's: the layer
walks and the guest inspection hold no GIL that serve's event loop needs. Identical requests
in flight share one plan; a dead planner process is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

import bot.runner.task_steps
import compositor
from bot.catalog import Catalog, load_catalog
from bot.runner.planner import Planner
from bot.runner.planning import PlanError, plan
from compositor.digest import layer_digest
from tests.fake_adapter import with_fake
from tests.slack.conftest import MakeSlack, texts


def booby_trap_planning_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning that ran in this process would fail."""
    def here(*args: object, **kwargs: object) -> None:
        raise AssertionError("planned in serve's process")
    monkeypatch.setattr(compositor, "digests_known", here)
    monkeypatch.setattr(bot.runner.task_steps, "publish_layer", here)


def remember_digests(catalog: Catalog) -> None:
    """As after a composite: planning then looks into the layers (the guest inspection)."""
    for layer in catalog.layers.values():
        layer_digest(layer.source, cache_dir=catalog.runner.cache_dir)


@pytest.fixture
def catalog(catalog_dir: Path) -> Catalog:
    return load_catalog(catalog_dir / "layerbot.yml")


@pytest.mark.timeout(120)
async def test_publish_is_planned_outside_serves_process(make_slack: MakeSlack,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    slack = await make_slack()
    remember_digests(slack.service.handlers.catalog)
    booby_trap_planning_here(monkeypatch)
    card = await slack.answer(await slack.command("win10-office"))
    assert "Review and publish" in texts(card), texts(card)
    assert "Cannot prepare" not in texts(card)


@pytest.mark.timeout(120)
async def test_planner_plans_as_planning_does(catalog: Catalog,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    remember_digests(catalog)
    expected = [plan(catalog, "win10-office", check_cache=True)]
    planner = Planner(catalog)
    try:
        booby_trap_planning_here(monkeypatch)
        assert await planner.plans(["win10-office"], check_cache=True) == expected
        with pytest.raises(KeyError, match=r"win10-ofice.*did you mean 'win10-office'"):
            await planner.plans(["win10-ofice"], check_cache=False)
    finally:
        await planner.close()


@pytest.mark.timeout(120)
async def test_planner_knows_connector_types_registered_here(catalog_dir: Path) -> None:
    """tests.slack.conftest registers the fake type in this process only."""
    (catalog_dir / "layerbot.yml").write_text(with_fake("broken: true"))
    planner = Planner(load_catalog(catalog_dir / "layerbot.yml"))
    try:
        with pytest.raises(PlanError, match="fake-hv"):
            await planner.plans(["win10-office"], check_cache=False)
    finally:
        await planner.close()


@pytest.mark.timeout(120)
async def test_identical_requests_in_flight_share_one_plan(catalog: Catalog) -> None:
    planner = Planner(catalog)
    made: list[tuple[tuple[str, ...], bool]] = []
    run = planner._plan

    async def counted(key: tuple[tuple[str, ...], bool]) -> list[object]:
        made.append(key)
        return await run(key)  # type: ignore[return-value]

    planner._plan = counted  # type: ignore[assignment, method-assign]
    try:
        plans = await asyncio.gather(*(planner.plans(["win10-office"], check_cache=True)
                                       for _ in range(20)),
                                     planner.plans(["win10-office"], check_cache=False))
        assert made == [(("win10-office",), True), (("win10-office",), False)]
        assert all(p == plans[0] for p in plans[:20])
        await planner.plans(["win10-office"], check_cache=True)  # done: planned again
        assert len(made) == 3
    finally:
        await planner.close()


@pytest.mark.timeout(120)
async def test_a_killed_planner_process_is_replaced(catalog: Catalog) -> None:
    planner = Planner(catalog)
    try:
        await planner.start()
        assert planner._pool is not None
        [child] = list(planner._pool._processes)  # type: ignore[attr-defined]
        os.kill(child, signal.SIGKILL)
        [p] = await planner.plans(["win10-office"], check_cache=True)
        assert p.template == "win10-office"
    finally:
        await planner.close()
