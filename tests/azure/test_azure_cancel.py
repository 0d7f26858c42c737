"""Cancel while Azure is still making the image or image version: ARM refuses (409) to delete
a resource being created, so the cleanup waits for its provisioning to end, then deletes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters import create
from adapters.base import publish
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import Tls, arm_double, arm_tls, clients, config
from tests.azure.test_azure_publish import context, until, vhd

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]
#: the cleanup's wait for a resource to stop being Creating, short for tests
SETTLE = {"settle_first": 0.01, "settle_longest": 0.05, "settle_budget": 30.0}


def creating(double: ArmDouble, store: str) -> bool:
    return any(r["properties"]["provisioningState"] == "Creating"
               for r in getattr(double, store).values())


@pytest.mark.parametrize(("kind", "store", "what"), [
    ("azure", "images", "Azure image cancelled"),
    ("azure-mcs", "versions", "Azure gallery image version layering_gallery/linux-vda/")])
async def test_cancel_while_the_image_is_being_made_leaves_nothing(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, kind: str, store: str,
        what: str) -> None:
    double = arm_double
    double.lro_polls = 2
    # polls 0.5 s apart: the image stays Creating long enough to cancel the task then
    adapter = create(config(double, kind), clients(double, arm_tls, polling_interval=0.5, **SETTLE))
    ctx = context(vhd(tmp_path / "c.vhd"), "cancelled")
    try:
        task = asyncio.create_task(publish(adapter, ctx))
        await until(lambda: creating(double, store))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert getattr(double, store) == {} and double.disks == {}
        assert ctx.removed[0].startswith(what) and ctx.removed[-1] == \
            "Azure managed disk cancelled-upload"
        assert len(ctx.removed) == 2, ctx.removed
    finally:
        await adapter.close()


async def test_an_image_creating_past_the_budget_stays_recorded_for_a_later_cleanup(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    double = arm_double
    double.lro_polls_of["images"] = 10**6  # never ends
    adapter = create(config(double), clients(double, arm_tls, polling_interval=0.05,
                                             **(SETTLE | {"settle_budget": 0.3})))
    ctx = context(vhd(tmp_path / "s.vhd"), "stuck")
    try:
        task = asyncio.create_task(publish(adapter, ctx))
        await until(lambda: creating(double, "images"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert creating(double, "images")  # not deleted: ARM would answer 409
        assert ctx.removed[0].startswith("could not remove Azure image stuck: Azure: the image "
                                         "stuck is still Creating after 0 s")
        assert [r.describe() for r in ctx.resources if hasattr(r, "describe")][-1] == \
            "Azure image stuck"
    finally:
        await adapter.close()
