"""A busy NFC endpoint (HTTP 503 with Retry-After) makes the import start over after the
Retry-After, leaving one VM; Retry-After is read as seconds or as an HTTP date."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters import config_model, create
from adapters.base import publish
from adapters.retry import RetryPolicy, retry_after
from adapters.vsphere import Clients, VSphereImport, VSpherePublished

from .conftest import Recorder, VcSim, connector, find_vms, watching_stub

pytestmark = pytest.mark.timeout(120)
RETRY_AFTER = 3


class BusyOnce:
    """Points the first import lease's NFC URL at a local server that reads the upload and
    answers 503 with Retry-After; later leases keep vcsim's URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.first_lease: str | None = None
        self.imports: list[float] = []

    def __call__(self, method: str, result: Any) -> Any:
        if method == "ImportVApp":
            self.imports.append(time.monotonic())
        if method == "RetrievePropertiesEx" and result is not None:
            for item in result.objects:
                for value in item.propSet:
                    if value.name != "info" or not getattr(value.val, "deviceUrl", None):
                        continue
                    self.first_lease = self.first_lease or item.obj._moId
                    if item.obj._moId == self.first_lease:
                        for device in value.val.deviceUrl:
                            device.url = self.url
        return result


async def test_a_503_with_retry_after_imports_again_after_waiting(
        vcsim: VcSim, vc_env: None, raw_disk: Path) -> None:
    refused: list[float] = []

    async def busy(request: web.Request) -> web.Response:
        await request.read()
        refused.append(time.monotonic())
        return web.Response(status=503, text="NFC busy", headers={"Retry-After": str(RETRY_AFTER)})

    app = web.Application(client_max_size=2**30)
    app.router.add_route("*", "/{tail:.*}", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    busy_once = BusyOnce(f"http://127.0.0.1:{port}/nfc/disk-0.vmdk")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    policy = RetryPolicy(attempts=3, budget=60, first_delay=0.01, max_delay=0.01, sleep=sleep)
    cfg = config_model("vsphere").model_validate(connector(vcsim))
    adapter = create(cfg, Clients(connect=watching_stub(busy_once), wait_seconds=1,
                                  import_retry=policy))
    rec = Recorder()
    try:
        published = await publish(adapter, rec.context(raw_disk, "busy-nfc"))
    finally:
        await runner.cleanup()
    assert len(refused) == 1 and slept == [RETRY_AFTER]
    assert len(busy_once.imports) == 2 and busy_once.imports[1] - refused[0] >= RETRY_AFTER
    assert [vm._moId for vm in find_vms(vcsim, "busy-nfc")] == [
        published.expect(VSpherePublished).moref]  # the first attempt's VM was removed
    assert rec.latest(VSphereImport) is None
    await adapter.close()


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after("120") == 120.0
    assert retry_after(formatdate(1_000_090, usegmt=True), now=1_000_000) == 90.0
    assert retry_after(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0  # past: at once
    assert retry_after(None) is None and retry_after("soon") is None
