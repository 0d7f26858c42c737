"""The page-blob upload against Azurite: only the non-zero pages go, in requests of at most
4 MiB, the blob ends equal to the VHD, an upload cut off mid-way resumes with only the missing
pages, throttling is waited out, and a bad SAS is an AuthError that does not show it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.azure_blob.nonzero import MAX_REQUEST, merged, subtract, total
from adapters.azure_blob.pages import BlobOptions, present_ranges, upload_pages, uploaded_bytes
from adapters.base import AuthError, PlatformError, RetryableError
from adapters.retry import RetryPolicy

from .conftest import MIB, nonzero_pages
from .storage_proxy import StorageProxy

pytestmark = pytest.mark.timeout(120)


def blob_bytes(sas_url: str) -> bytes:
    from azure.storage.blob import BlobClient

    with BlobClient.from_blob_url(sas_url) as blob:
        return blob.download_blob().readall()


def azurite_ranges(sas_url: str) -> list[tuple[int, int]]:
    """Page ranges as Azurite lists them (end inclusive there), merged."""
    from azure.storage.blob import BlobClient

    with BlobClient.from_blob_url(sas_url) as blob:
        return merged((r.start, r.end + 1) for r in blob.list_page_ranges())


async def test_only_the_nonzero_pages_are_sent_and_the_blob_equals_the_vhd(
        sample_vhd: Path, page_blob: Callable[..., str], proxy: StorageProxy) -> None:
    url = page_blob(sample_vhd.stat().st_size)
    notes: list[float] = []

    async def progress(fraction: float, note: str) -> None:
        notes.append(fraction)

    stats = await upload_pages(proxy.url(url), sample_vhd, progress=progress, concurrency=4)

    expected = nonzero_pages(sample_vhd)
    assert azurite_ranges(url) == expected
    assert blob_bytes(url) == sample_vhd.read_bytes()
    assert proxy.sent_bytes == stats.sent_bytes == stats.data_bytes == total(expected)
    assert stats.sent_bytes < sample_vhd.stat().st_size / 4
    # the 10 MiB run goes as 4 + 4 + 2 MiB; the alternating pages as single pages
    assert max(proxy.put_sizes) == MAX_REQUEST
    assert sorted(proxy.put_sizes).count(MAX_REQUEST) == 2
    assert all(size % 512 == 0 for size in proxy.put_sizes)
    assert notes[-1] == 1.0 and notes == sorted(notes)


async def test_an_upload_cut_off_midway_resumes_with_only_the_missing_pages(
        sample_vhd: Path, page_blob: Callable[..., str], proxy: StorageProxy) -> None:
    url = page_blob(sample_vhd.stat().st_size)
    proxy.hold_after = 3
    first = asyncio.create_task(upload_pages(proxy.url(url), sample_vhd, concurrency=2))
    await asyncio.wait_for(proxy.holding.wait(), 30)
    first.cancel()  # the runner died (or lost its lease) mid-upload
    with pytest.raises(asyncio.CancelledError):
        await first
    await proxy.settled()

    present = await present_ranges(url)
    held = total(present)
    expected = nonzero_pages(sample_vhd)
    assert present == azurite_ranges(url) and 0 < held < total(expected)
    assert await uploaded_bytes(url, sample_vhd) == held

    proxy.hold_after, proxy.put_sizes = None, []
    stats = await upload_pages(proxy.url(url), sample_vhd, present=present, concurrency=2)

    assert proxy.sent_bytes == stats.sent_bytes == total(expected) - held
    assert stats.present_bytes == held
    assert azurite_ranges(url) == expected
    assert blob_bytes(url) == sample_vhd.read_bytes()


async def test_pages_present_where_the_vhd_is_zero_are_cleared(
        sample_vhd: Path, page_blob: Callable[..., str]) -> None:
    from azure.storage.blob import BlobClient

    url = page_blob(sample_vhd.stat().st_size)
    with BlobClient.from_blob_url(url) as blob:  # left by something else: not this VHD's
        blob.upload_page(b"\xff" * 8192, offset=30 * MIB, length=8192)

    stats = await upload_pages(url, sample_vhd, present=await present_ranges(url))

    assert stats.cleared_bytes == 8192
    assert blob_bytes(url) == sample_vhd.read_bytes()
    assert azurite_ranges(url) == nonzero_pages(sample_vhd)


async def test_a_429_is_retried_after_its_retry_after(
        sample_vhd: Path, page_blob: Callable[..., str], proxy: StorageProxy) -> None:
    url = page_blob(sample_vhd.stat().st_size)
    proxy.throttle, proxy.retry_after = 2, "7"
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(first_delay=0.01, sleep=sleep)
    stats = await upload_pages(proxy.url(url), sample_vhd, concurrency=1,
                               options=BlobOptions(retry=policy))

    assert proxy.throttled == 2 and waits == [7.0, 7.0]
    assert proxy.sent_bytes == stats.sent_bytes == total(nonzero_pages(sample_vhd))
    assert blob_bytes(url) == sample_vhd.read_bytes()


async def test_throttling_past_the_retry_budget_is_a_retryable_error_with_azures_code(
        sample_vhd: Path, page_blob: Callable[..., str], proxy: StorageProxy) -> None:
    url = page_blob(sample_vhd.stat().st_size)
    proxy.throttle, proxy.retry_after = 1000, "0"

    async def sleep(seconds: float) -> None:
        return None

    with pytest.raises(RetryableError) as failure:
        await upload_pages(proxy.url(url), sample_vhd, concurrency=1,
                           options=BlobOptions(retry=RetryPolicy(attempts=3, sleep=sleep)))
    assert "HTTP 429 TooManyRequests" in str(failure.value)
    assert failure.value.retry_after == 0.0 and proxy.throttled == 3


@pytest.mark.parametrize("sas", [{"key": "d3Jvbmcga2V5IGZvciB0aGlzIGFjY291bnQ="},
                                 {"expires_in": -60.0}], ids=["wrong-key", "expired"])
async def test_a_wrong_or_expired_sas_is_an_auth_error_that_hides_the_signature(
        sample_vhd: Path, page_blob: Callable[..., str], sas: dict[str, object],
        caplog: pytest.LogCaptureFixture) -> None:
    url = page_blob(sample_vhd.stat().st_size, **sas)
    query = urlsplit(url).query
    signatures = {parse_qs(query)["sig"][0], re.search(r"sig=([^&]+)", query).group(1)}  # type: ignore[union-attr]
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthError) as failure:
        await upload_pages(url, sample_vhd)
    with pytest.raises(AuthError):
        await present_ranges(url)

    message = str(failure.value)
    # Azure says AuthenticationFailed for a bad signature; Azurite AuthorizationFailure
    assert re.search(r"HTTP 403 (AuthenticationFailed|AuthorizationFailure)", message), message
    assert "/disks/disk" in message
    for text in (message, caplog.text):
        assert not [sig for sig in signatures if sig in text]  # as it is, and URL-encoded


async def test_a_blob_whose_size_is_not_the_vhds_is_refused_before_any_page_is_sent(
        sample_vhd: Path, page_blob: Callable[..., str], proxy: StorageProxy) -> None:
    url = page_blob(sample_vhd.stat().st_size - 512)  # uploadSizeBytes without the footer
    with pytest.raises(PlatformError, match="uploadSizeBytes must be the VHD file's size"):
        await upload_pages(proxy.url(url), sample_vhd)
    assert proxy.put_sizes == []
    assert await uploaded_bytes(url, sample_vhd) == 0


def test_the_sample_vhd_has_data_holes_and_zero_pages_inside_its_data(sample_vhd: Path) -> None:
    """What the tests above rely on: the VHD's data extents hold zero pages too."""
    from adapters.azure_blob.nonzero import data_extents

    with open(sample_vhd, "rb") as f:
        extents = data_extents(f.fileno(), sample_vhd.stat().st_size)
    data = nonzero_pages(sample_vhd)
    assert total(extents) < sample_vhd.stat().st_size / 2
    assert total(subtract(extents, data)) > 0  # zero pages inside the data extents


