"""Throttling of ARM calls and of a long-running operation's polls: Retry-After honoured
(an injected sleep records the waits), a throttled poll retried in place without starting
the operation again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters import create
from adapters.base import PlatformError, publish
from adapters.retry import RetryPolicy
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import Tls, arm_double, arm_tls, clients, config
from tests.azure.test_azure_publish import context, vhd

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]


def recording(waits: list[float]) -> RetryPolicy:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)
    return RetryPolicy(attempts=4, budget=300.0, first_delay=0.01, max_delay=0.05, sleep=sleep)


async def test_throttled_put_is_retried_after_retry_after(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    arm_double.throttle("PUT", "images", times=1, retry_after=7)
    waits: list[float] = []
    adapter = create(config(arm_double), clients(arm_double, arm_tls, arm_retry=recording(waits)))
    try:
        await publish(adapter, context(vhd(tmp_path / "t.vhd"), "throttled"))
        assert arm_double.count("PUT", "images") == 2 and len(arm_double.images) == 1
        assert waits == [7.0]  # Retry-After, not the policy's own 0.05 s at most
    finally:
        await adapter.close()


@pytest.mark.parametrize("kind", ["azure", "azure-mcs"])
async def test_throttled_polls_are_retried_in_place_without_a_second_put(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, kind: str) -> None:
    arm_double.lro_polls = 2
    waits: list[float] = []
    adapter = create(config(arm_double, kind),
                     clients(arm_double, arm_tls, arm_retry=recording(waits)))
    made = "images" if kind == "azure" else "versions"
    try:
        await publish(adapter, context(vhd(tmp_path / "p.vhd"), "polled"))
        puts = arm_double.count("PUT", made)
        arm_double.throttle("GET", "operations", times=2, retry_after=3)
        await publish(adapter, context(vhd(tmp_path / "q.vhd"), "polled-2"))
        assert arm_double.count("PUT", made) == puts + 1  # one PUT: the polls were retried
        assert waits == [3.0, 3.0]
        assert all(t.times == 0 for t in arm_double.throttles)
        assert len(arm_double.images) + len(arm_double.versions) == 2
    finally:
        await adapter.close()


async def test_two_mcs_tasks_in_the_same_second_get_two_versions(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    from adapters.azure_mcs import bump_patch

    # a pattern that gives the same name all day: the second task bumps the patch number
    adapter = create(config(arm_double, "azure-mcs", version="{yyyy}.{mm}{dd}.1"),
                     clients(arm_double, arm_tls))
    try:
        await asyncio.gather(publish(adapter, context(vhd(tmp_path / "a.vhd"), "twin-a")),
                             publish(adapter, context(vhd(tmp_path / "b.vhd"), "twin-b")))
        names = sorted(v["name"] for v in arm_double.versions.values())
        assert len(names) == 2 and names[1] == bump_patch(names[0]) and names[0].endswith(".1")
    finally:
        await adapter.close()
    assert bump_patch("1.2.3") == "1.2.4"
    with pytest.raises(PlatformError, match="32-bit limit 2147483647"):
        bump_patch("1.2.2147483647")
