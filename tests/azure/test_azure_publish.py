"""The azure and azure-mcs adapters against the ARM double (TLS, azure-identity) and Azurite:
full publishes, the VM watch, throttling, a Failed long-running operation, a resumed upload,
wrong credentials and a VHD that is not a whole number of MiB."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters import create
from adapters.azure.arm_errors import AzureAdapterError
from adapters.azure.azure_resources import AzurePoweredOn
from adapters.azure.publish import AzureAdapterBase
from adapters.azure.vm_watch import WATCHES
from adapters.azure_blob.pages import BlobOptions
from adapters.base import (
    AuthError,
    Capability,
    PlatformError,
    PublishContext,
    Watcher,
    clean_up,
    publish,
)
from adapters.resources import Lifetime, Resource
from adapters.steps import Outcome, detach
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import (
    SECRET,
    SECRET_ENV,
    StaticCredential,
    Tls,
    arm_double,
    arm_tls,
    clients,
    config,
)
from tests.azure.storage_proxy import StorageProxy

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              # aiohttp warns about a bytes body over 1 MiB (adapters/azure_blob/pages.py's Put
              # Page as merged; h-azure-pages passes a BytesIO in its next commit)
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]
MIB = 1 << 20


def vhd(path: Path, mib: int = 24, data: dict[int, bytes] | None = None) -> Path:
    """A sparse fixed-VHD-sized file: ``mib`` MiB + the 512-byte footer, data at offsets."""
    chunks = {0: os.urandom(MIB), 9 * MIB + 4096: os.urandom(3 * MIB)} if data is None else data
    with open(path, "wb") as f:
        f.truncate(mib * MIB + 512)
        for offset, chunk in chunks.items():
            f.seek(offset)
            f.write(chunk)
        f.seek(mib * MIB)
        f.write(b"conectix" + os.urandom(504))
    return path


def context(path: Path, name: str, notes: list[tuple[float, str]] | None = None,
            resources: list[Resource] | None = None) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append((fraction, note))
    return PublishContext(task_id="t0a2e", template="win", image_name=name, artifact=path,
                          artifact_format="vhd", virtual_size=path.stat().st_size - 512,
                          progress=progress, resources=list(resources or []))


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), failing after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def blob_bytes(double: ArmDouble, disk_name: str) -> bytes:
    from azure.storage.blob.aio import BlobServiceClient

    from tests.azure.arm_double import _blob_name

    assert double.blobs is not None
    disk = double.disks[f"layering/{disk_name}".lower()]
    async with BlobServiceClient(double.blobs.account_url, credential={
            "account_name": double.blobs.account_name,
            "account_key": double.blobs.account_key}) as service:
        blob = service.get_blob_client(double.blobs.container, _blob_name(disk))
        return await (await blob.download_blob()).readall()


async def blob_ranges(double: ArmDouble, disk_name: str) -> list[tuple[int, int]]:
    """The page ranges Azurite holds for the disk's blob, read with the account key (not
    through the adapter)."""
    from azure.storage.blob.aio import BlobServiceClient

    from adapters.azure_blob.nonzero import merged
    from tests.azure.arm_double import _blob_name

    assert double.blobs is not None
    disk = double.disks[f"layering/{disk_name}".lower()]
    async with BlobServiceClient(double.blobs.account_url, credential={
            "account_name": double.blobs.account_name,
            "account_key": double.blobs.account_key}) as service:
        blob = service.get_blob_client(double.blobs.container, _blob_name(disk))
        return merged([(r.start, r.end + 1) async for r in blob.list_page_ranges()])


async def compute(double: ArmDouble, tls: Tls) -> Any:
    from azure.mgmt.compute.aio import ComputeManagementClient

    return ComputeManagementClient(StaticCredential(double.static_token), double.subscription_id,
                                   base_url=double.base_url, connection_verify=str(tls.ca_file),
                                   credential_scopes=[f"{double.base_url}/.default"],
                                   polling_interval=0.01)


async def make_vm(client: Any, name: str, image_id: str) -> None:
    body = {"location": "westeurope", "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
        "storageProfile": {"imageReference": {"id": image_id}}}}
    await (await client.virtual_machines.begin_create_or_update("layering", name, body)).result()


async def test_publish_image_through_azure_identity_then_vm_runs_and_deallocates(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    double = arm_double
    disk_file = vhd(tmp_path / "win.vhd")
    cfg = config(double, keep_disk=True, vm_size="Standard_D2s_v5")
    adapter = create(cfg, clients(double, arm_tls, identity=True))
    assert isinstance(adapter, AzureAdapterBase) and isinstance(adapter, Watcher)
    ctx = context(disk_file, "win-20261202-a1b2c3")
    try:
        published = await publish(adapter, ctx)
        assert double.token_requests >= 1  # the token came from the double through azure-identity
        [image] = double.images.values()
        os_disk = image["properties"]["storageProfile"]["osDisk"]
        assert (os_disk["osType"], os_disk["osState"]) == ("Linux", "Generalized")
        assert image["properties"]["hyperVGeneration"] == "V2"
        assert image["properties"]["provisioningState"] == "Succeeded"
        [disk] = double.disks.values()  # keep_disk: kept, its access revoked
        assert disk["properties"]["diskState"] == "Unattached"
        assert await blob_bytes(double, disk["name"]) == disk_file.read_bytes()
        assert adapter.uploads[0].sent_bytes == 4 * MIB + 512  # the zeros were not sent
        assert published.link == (
            f"https://portal.azure.com/#@{double.tenant_id}/resource{image['id']}/overview")
        text = adapter.next_steps(published)
        assert "Enter the values required, finish creating the machine, and power it on." in text
        assert "Standard_D2s_v5" in text

        # two tasks wait in one resource group: one poller lists the VMs for both
        other = vhd(tmp_path / "other.vhd")
        second = context(other, "win-20261202-d4e5f6")
        published_2 = await publish(adapter, second)
        waits = [asyncio.create_task(adapter.wait_for_shutdown(p, c))
                 for p, c in ((published, ctx), (published_2, second))]
        await until(lambda: len(WATCHES.pollers) == 1
                    and next(iter(WATCHES.pollers.values())).listings >= 2)
        assert len(WATCHES.pollers) == 1 and not any(w.done() for w in waits)
        poller = next(iter(WATCHES.pollers.values()))
        done, listings = poller.listings, double.count("GET", "virtualMachines")
        # one listing per poll, whatever the waiters (one may be in flight as we count)
        assert done <= listings <= done + 1

        client = await compute(double, arm_tls)
        async with client:
            await make_vm(client, "vm1", image["id"])
            await until(lambda: any(isinstance(r, AzurePoweredOn) for r in ctx.resources))
            assert not waits[0].done()
            await (await client.virtual_machines.begin_deallocate("layering", "vm1")).result()
            await asyncio.wait_for(waits[0], 10)
            assert not waits[1].done()  # the other image has no VM yet
            waits[1].cancel()
            await asyncio.gather(waits[1], return_exceptions=True)
        assert WATCHES.pollers == {}  # gone with its last waiter
    finally:
        await adapter.close()


async def test_publish_mcs_gallery_version(arm_double: ArmDouble, arm_tls: Tls,
                                           tmp_path: Path) -> None:
    double = arm_double
    adapter = create(config(double, "azure-mcs"), clients(double, arm_tls))
    assert adapter.capabilities == Capability.RESUMABLE_UPLOAD  # Done once Succeeded
    assert not hasattr(adapter, "wait_for_shutdown")
    ctx = context(vhd(tmp_path / "mcs.vhd"), "vda-20261202-a1b2c3")
    try:
        published = await publish(adapter, ctx)
        [definition] = double.definitions.values()
        assert definition["properties"]["hyperVGeneration"] == "V2"
        assert definition["properties"]["osType"] == "Linux"
        [version] = double.versions.values()
        assert version["properties"]["provisioningState"] == "Succeeded"
        regions = version["properties"]["publishingProfile"]["targetRegions"]
        assert [r["name"] for r in regions] == ["westeurope", "northeurope"]
        assert double.disks == {}  # the staging disk is gone once the version exists
        assert "master image of your MCS machine catalog" in adapter.next_steps(published)
        assert version["id"] in adapter.next_steps(published)
    finally:
        await adapter.close()
    # an existing definition of another generation is refused, naming what differs
    v1 = create(config(double, "azure-mcs", hyper_v_generation="V1"), clients(double, arm_tls))
    try:
        with pytest.raises(PlatformError, match="hyperVGeneration is V2, the connector's is V1"):
            await publish(v1, context(ctx.artifact, "vda-20261202-b1b2c3"))
        assert double.disks == {} and len(double.versions) == 1  # its disk was removed
    finally:
        await v1.close()


async def test_lro_failed_keeps_azure_code_and_removes_what_it_made(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    double = arm_double
    double.fail_next("images", "QuotaExceeded", "Operation could not be completed as it results "
                     "in exceeding approved Total Regional Cores quota.")
    adapter = create(config(double), clients(double, arm_tls))
    ctx = context(vhd(tmp_path / "f.vhd"), "failing")
    try:
        with pytest.raises(PlatformError) as raised:
            await publish(adapter, ctx)
        assert isinstance(raised.value, AzureAdapterError) and raised.value.code == "QuotaExceeded"
        assert "QuotaExceeded: Operation could not be completed" in str(raised.value)
        assert double.images == {} and double.disks == {}
        assert ctx.removed == ["Azure image failing", "Azure managed disk failing-upload"]
        assert [r for r in ctx.resources if r.lifetime is not Lifetime.MARK] == []
    finally:
        await adapter.close()


async def test_wrong_secret_is_an_auth_error_without_the_secret(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-" + SECRET)
    adapter = create(config(arm_double), clients(arm_double, arm_tls, identity=True))
    ctx = context(vhd(tmp_path / "w.vhd"), "denied")
    try:
        with pytest.raises(AuthError) as raised:
            await publish(adapter, ctx)
        assert "AADSTS7000215" in str(raised.value) and SECRET not in str(raised.value)
        assert arm_double.disks == {} and arm_double.requests == []
        # recorded before ARM was asked, it stays recorded for a later cleanup, and says so
        assert ctx.removed == ["could not remove Azure managed disk denied-upload: "
                               + str(raised.value).replace("creating", "reading", 1)]
    finally:
        await adapter.close()


async def test_vhd_not_whole_mib_is_rejected_before_any_call(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path) -> None:
    odd = tmp_path / "odd.vhd"
    with open(odd, "wb") as f:
        f.truncate(24 * MIB + 4096 + 512)
    adapter = create(config(arm_double), clients(arm_double, arm_tls))
    try:
        with pytest.raises(PlatformError, match=r"odd\.vhd is 25170432 bytes: .* whole number of "
                                                r"MiB .* e\.g\. 26214912 bytes"):
            await publish(adapter, context(odd, "odd"))
        assert arm_double.requests == []
    finally:
        await adapter.close()
    # and ARM itself refuses such an uploadSizeBytes, naming the parameter
    client = await compute(arm_double, arm_tls)
    async with client:
        from azure.core.exceptions import HttpResponseError

        body = {"location": "westeurope", "properties": {"creationData": {
            "createOption": "Upload", "uploadSizeBytes": 24 * MIB + 4096 + 512}}}
        with pytest.raises(HttpResponseError, match="uploadSizeBytes"):
            await (await client.disks.begin_create_or_update("layering", "odd", body)).result()


async def test_upload_cut_off_is_resumed_by_a_second_runner_sending_only_the_rest(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, proxy: StorageProxy) -> None:
    assert arm_double.blobs is not None  # the disks' SAS URLs lead through the counting proxy
    arm_double.blobs.sas_account_url = proxy.url(arm_double.blobs.account_url)
    # 32 separate MiB of data (+ the footer): more requests than the upload runs at once
    data = {i * 2 * MIB: os.urandom(MIB) for i in range(32)}
    disk_file = vhd(tmp_path / "r.vhd", 64, data)
    whole = 32 * MIB + 512
    # 8 requests at once: the first runner stops with most of the data not sent
    first = create(config(arm_double), clients(arm_double, arm_tls,
                                               blob=BlobOptions(concurrency=8)))
    assert isinstance(first, AzureAdapterBase)
    job: list[asyncio.Task[Any]] = []

    async def stop_after_some(fraction: float, note: str) -> None:
        if fraction > 0 and job:
            detach(job[0])
    ctx = context(disk_file, "resumed")
    ctx.progress = stop_after_some
    try:
        job.append(asyncio.create_task(publish(first, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await first.close()
    second = create(config(arm_double), clients(arm_double, arm_tls))
    assert isinstance(second, AzureAdapterBase)
    notes: list[tuple[float, str]] = []
    again = context(disk_file, "resumed", notes, ctx.resources)
    try:
        await proxy.settled()  # Put Page requests in flight when the first runner stopped
        held = sum(end - start for start, end in await blob_ranges(arm_double, "resumed-upload"))
        assert 0 < held < whole
        proxy.put_sizes = []
        assert await second.uploaded_bytes(ctx.resources[0], disk_file) == held
        await publish(second, again)
        assert notes[0][0] > 0 and "resuming" in notes[0][1]
        [stats] = second.uploads
        # only what the blob did not hold was sent (counted on the wire too)
        assert (stats.sent_bytes, stats.present_bytes) == (whole - held, held)
        assert proxy.sent_bytes == whole - held
        assert len(arm_double.images) == 1 and arm_double.disks == {}
        await clean_up(second, again, Outcome.FAILED)
        assert arm_double.images == {}
    finally:
        await second.close()
