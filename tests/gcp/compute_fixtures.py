"""The Compute double as fixtures, and a gcp connector pointed at it (a fixed bearer token
the double checks, fast polls)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.base import PublishContext
from adapters.blocking import SessionPool
from adapters.gcp import Clients, Config
from adapters.resources import Resource

from .compute_double import ComputeDouble

PROJECT = "layerbot-test"
ZONE = "europe-west1-b"
TOKEN = "ya29.test-token-not-a-secret"


def fake_credentials(config: Config) -> Any:
    from google.oauth2.credentials import Credentials

    return Credentials(token=TOKEN)


def clients(**storage: Any) -> Clients:
    return Clients(credentials=fake_credentials, operation_poll=(0.01, 0.05),
                   watch_poll=(0.02, 0.1), sessions=SessionPool(), storage_options=storage)


def connector(double: ComputeDouble, storage_url: str | None = None, **more: Any) -> Config:
    return Config.model_validate({
        "type": "gcp", "project": PROJECT, "zone": ZONE, "bucket": "layerbot-images",
        "compute_endpoint": double.url, "storage_endpoint": storage_url,
        "guest_os_features": ["UEFI_COMPATIBLE", "GVNIC"], "image_family": "layered",
        "labels": {"team": "euc"}, **more})


@pytest.fixture
async def compute() -> AsyncIterator[ComputeDouble]:
    double = await ComputeDouble(PROJECT, token=TOKEN).start()
    yield double
    await double.close()


def context(name: str, artifact: Any, task_id: str = "t0c0ffee", template: str = "win10",
            resources: list[Resource] | None = None, notes: list[str] | None = None) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append(note)

    return PublishContext(task_id=task_id, template=template, image_name=name,
                          artifact=artifact, artifact_format="gce-tar",
                          virtual_size=1 << 30, progress=progress,
                          resources=list(resources or []))


def object_check(storage_url: str) -> Any:
    """The double's check that rawDisk.source names an object the storage peer holds."""
    from urllib.parse import quote

    import aiohttp

    async def exists(bucket: str, name: str) -> bool:
        async with aiohttp.ClientSession() as session, session.get(
                f"{storage_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}") as resp:
            return resp.status == 200

    return exists
