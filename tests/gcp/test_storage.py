"""The resumable upload of a gce-tar to Cloud Storage, against gcp-storage-emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.base import (
    AuthError,
    NotFoundError,
    PlatformError,
    PublishContext,
    RetryableError,
    clean_up,
)
from adapters.gcp.gcs_errors import from_status
from adapters.gcp.storage import CHUNK_QUANTUM, GcsUpload, Storage, object_name
from adapters.resources import Resource, dump, latest, load
from adapters.steps import Outcome
from compositor.convert import convert
from compositor.identity import KeyIdentity

from .conftest import BUCKET, Emulator, Proxy, access

NAME = object_name("win10-office", "t1")
pytestmark = pytest.mark.timeout(60)


class RunnerDied(Exception):
    """Stands for the runner's process ending in the middle of the upload."""


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real gce-tar: a 1 GiB sparse disk with 2.3 MiB of random data (compresses to itself)."""
    folder = tmp_path_factory.mktemp("gce")
    raw = folder / "disk.img"
    with open(raw, "wb") as fh:
        fh.truncate(1 << 30)
        for offset in (1 << 20, 300 << 20, (1 << 30) - (1 << 20)):
            fh.seek(offset)
            fh.write(os.urandom(800 << 10))
    out = folder / "disk.tar.gz"
    import asyncio

    asyncio.run(convert(raw, "gce-tar", out, lambda _: None, KeyIdentity("seed")))
    assert out.stat().st_size > 8 * CHUNK_QUANTUM and out.stat().st_size % CHUNK_QUANTUM
    return out


def context(artifact: Path, resources: list[Resource] | None = None,
            notes: list[tuple[float, str]] | None = None, die_at: float | None = None
            ) -> PublishContext:
    stored: list[list[Resource]] = []

    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append((fraction, note))
        if die_at is not None and fraction >= die_at:
            raise RunnerDied(note)

    async def persist(resources: list[Resource]) -> None:
        stored.append(list(resources))

    return PublishContext(task_id="t1", template="win10-office", image_name="win10-office-1",
                          artifact=artifact, artifact_format="gce-tar", virtual_size=1 << 30,
                          progress=progress, persist=persist, resources=resources or [])


def read_back(emulator: Emulator, name: str = NAME) -> bytes:
    """The object's bytes from the emulator's own state (its HTTP API from this event loop's
    thread would block the loop that runs the proxy in front of it)."""
    data: bytes = emulator.storage.get_file(BUCKET, name)
    return data


def objects(emulator: Emulator) -> dict[str, int]:
    """Object name -> its generation, from the emulator's own state."""
    found, _ = emulator.storage.get_file_list(BUCKET)
    return {o["name"]: int(o["generation"]) for o in found}


async def test_the_object_read_back_is_the_tarball(emulator: Emulator, gcs: Proxy,
                                                   tarball: Path) -> None:
    notes: list[tuple[float, str]] = []
    ctx = context(tarball, notes=notes)
    storage = Storage(access(gcs))
    try:
        done = await storage.upload(ctx, BUCKET, NAME)
    finally:
        await storage.close()
    size = tarball.stat().st_size
    assert read_back(emulator) == tarball.read_bytes()
    assert (done.sent, done.resumed_from) == (size, 0)
    [lengths] = gcs.chunks.values()
    assert len(lengths) == -(-size // CHUNK_QUANTUM) and not gcs.problems
    assert latest(ctx.resources, GcsUpload) == done.upload
    assert notes[-1] == (1.0, f"uploading to Google Cloud Storage: {size / 2**20:.0f} of "
                              f"{size / 2**20:.0f} MiB")
    assert [f for f, _ in notes] == sorted(f for f, _ in notes)


async def test_a_second_uploader_sends_only_the_rest(emulator: Emulator, gcs: Proxy,
                                                     tarball: Path) -> None:
    """The first runner dies after about 40 %; the task's resources go through the store's JSON
    to a second runner, which asks GCS what it holds and sends the rest."""
    first = context(tarball, die_at=0.4)
    storage = Storage(access(gcs))
    with pytest.raises(RunnerDied):
        await storage.upload(first, BUCKET, NAME)
    await storage.close()
    size = tarball.stat().st_size
    sent_before = gcs.sent()
    assert 0 < sent_before < size

    second = context(tarball, resources=load(dump(first.resources), where="t1"))
    storage = Storage(access(gcs))
    try:
        done = await storage.upload(second, BUCKET, NAME)
    finally:
        await storage.close()
    assert len(gcs.chunks) == 1, "the same session continued"
    assert done.resumed_from == sent_before
    assert done.sent == gcs.sent() - sent_before == size - sent_before
    assert read_back(emulator) == tarball.read_bytes()
    # the same session: nothing new recorded, the finished object's generation added
    [upload] = second.resources
    assert isinstance(upload, GcsUpload) and upload.session_url == done.upload.session_url
    assert upload == first.resources[0].model_copy(update={"generation": upload.generation})


async def test_429_is_retried_after_its_retry_after(emulator: Emulator, gcs: Proxy,
                                                    tarball: Path) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    import dataclasses

    settings = access(gcs)
    settings = dataclasses.replace(settings, retry=dataclasses.replace(settings.retry, sleep=sleep))
    gcs.inject = [(429, "rateLimitExceeded", {"Retry-After": "3"}), (503, "backendError", {})]
    storage = Storage(settings)
    try:
        done = await storage.upload(context(tarball), BUCKET, NAME)
    finally:
        await storage.close()
    assert gcs.injected == 2
    assert slept[0] >= 3.0 and len(slept) == 2
    assert read_back(emulator) == tarball.read_bytes()
    # the refused chunk was sent twice; nothing else
    assert done.sent == tarball.stat().st_size + 2 * CHUNK_QUANTUM


async def test_an_upload_for_another_artifact_starts_a_new_session(
        emulator: Emulator, gcs: Proxy, tarball: Path, tmp_path: Path) -> None:
    first = context(tarball, die_at=0.3)
    storage = Storage(access(gcs))
    with pytest.raises(RunnerDied):
        await storage.upload(first, BUCKET, NAME)
    other = tmp_path / "other.tar.gz"
    other.write_bytes(os.urandom(3 * CHUNK_QUANTUM + 5))
    second = context(other, resources=list(first.resources))
    try:
        done = await storage.upload(second, BUCKET, NAME)
    finally:
        await storage.close()
    assert done.resumed_from == 0 and len(gcs.chunks) == 2
    assert [r.session_url for r in second.resources] == [done.upload.session_url]
    assert read_back(emulator) == other.read_bytes()


async def test_an_upload_to_another_name_deletes_the_finished_object_first(
        emulator: Emulator, gcs: Proxy, tarball: Path) -> None:
    """The object's name changed between attempts (a renamed template): the first attempt's
    finished object is deleted, not just forgotten; each record holds its object's
    generation."""
    ctx = context(tarball)
    other = object_name("win10-renamed", "t1")
    storage = Storage(access(gcs))
    try:
        first = await storage.upload(ctx, BUCKET, NAME)
        assert first.upload.generation == objects(emulator)[NAME]
        second = await storage.upload(ctx, BUCKET, other)
    finally:
        await storage.close()
    assert list(objects(emulator)) == [other]
    assert ctx.resources == [second.upload] and second.upload.generation == objects(emulator)[other]


async def test_cleanup_deletes_the_recorded_generation_only(emulator: Emulator, gcs: Proxy,
                                                             tarball: Path) -> None:
    """A later object of the same name (another generation) is not this upload's: left alone."""
    ctx = context(tarball)
    storage = Storage(access(gcs))
    try:
        done = await storage.upload(ctx, BUCKET, NAME)
        gone = done.upload.model_copy(update={"generation": done.upload.generation + 1})
        assert not any(line.startswith("deleted") for line in await storage.remove(gone))
        assert NAME in objects(emulator)
        assert await storage.remove(done.upload) == [f"deleted {done.upload.describe()}"]
    finally:
        await storage.close()
    assert NAME not in objects(emulator)


async def test_cleanup_deletes_the_staging_object_once(emulator: Emulator, gcs: Proxy,
                                                       tarball: Path) -> None:
    ctx = context(tarball)
    storage = Storage(access(gcs))

    class Adapter:  # what the gcp adapter's remove() does with this resource
        async def remove(self, resource: Resource) -> list[str]:
            assert isinstance(resource, GcsUpload)
            return await storage.remove(resource)

    try:
        done = await storage.upload(ctx, BUCKET, NAME)
        lines = await clean_up(Adapter(), ctx, Outcome.SUCCEEDED)  # type: ignore[arg-type]
        again = await storage.remove(done.upload)
    finally:
        await storage.close()
    assert lines == [f"deleted Cloud Storage object gs://{BUCKET}/{NAME}"]
    assert ctx.resources == [] and again == []
    assert NAME not in objects(emulator)


async def test_an_error_keeps_googles_message_and_never_the_session(
        emulator: Emulator, gcs: Proxy, tarball: Path) -> None:
    gcs.inject = [(403, "forbidden", {})]
    ctx = context(tarball)
    storage = Storage(access(gcs))
    try:
        with pytest.raises(AuthError) as caught:
            await storage.upload(ctx, BUCKET, NAME)
    finally:
        await storage.close()
    upload = latest(ctx.resources, GcsUpload)
    assert upload is not None
    upload_id = upload.session_url.partition("upload_id=")[2]
    message = str(caught.value)
    assert "HTTP 403: injected by the test proxy (forbidden)" in message
    for shown in (message, repr(upload), upload.describe(), str(upload)):
        assert upload_id not in shown and upload.session_url not in shown


async def test_debug_logs_of_an_upload_never_show_the_session(emulator: Emulator, gcs: Proxy,
                                                             tarball: Path) -> None:
    """``layerbot -v``: the root logger at DEBUG, where urllib3 logs every chunk's PUT with its
    query string; the CLI's handler masks the session's upload_id."""
    import io
    import logging

    from bot.cli import log_setup

    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = log_setup.configure(logging.DEBUG, stream=stream)
    ctx = context(tarball)
    storage = Storage(access(gcs))
    try:
        await storage.upload(ctx, BUCKET, NAME)
    finally:
        await storage.close()
        root.removeHandler(handler)
        root.setLevel(level)
    upload = latest(ctx.resources, GcsUpload)
    assert upload is not None
    upload_id = upload.session_url.partition("upload_id=")[2]
    logged = stream.getvalue()
    assert upload_id and upload_id not in logged
    assert logged.count(f"upload_id={log_setup.MASK}") >= len(gcs.chunks[upload_id])  # every PUT


def test_a_refused_token_refresh_never_shows_its_text() -> None:
    """google-auth's RefreshError quotes the token endpoint's answer: it is never shown."""
    from google.auth.exceptions import RefreshError

    from adapters.gcp.gcs_errors import translate

    found = translate(RefreshError("invalid_grant: token ya29.SECRET-VALUE expired", {"x": 1}),
                      "uploading gs://b/o")
    assert isinstance(found, AuthError) and "SECRET" not in str(found)
    assert str(found).endswith("the credentials were refused and could not be renewed")


async def test_a_missing_bucket_is_not_found(emulator: Emulator, gcs: Proxy,
                                             tarball: Path) -> None:
    storage = Storage(access(gcs))
    try:
        with pytest.raises(NotFoundError, match="no-such-bucket"):
            await storage.upload(context(tarball), "no-such-bucket", NAME)
    finally:
        await storage.close()


SESSION = "https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=SECRET1"


@pytest.mark.parametrize("status,reason,error", [
    (403, "forbidden", AuthError), (401, "required", AuthError), (404, "notFound", NotFoundError),
    (429, "rateLimitExceeded", RetryableError), (403, "rateLimitExceeded", RetryableError),
    (503, "backendError", RetryableError), (500, "", RetryableError),
    (409, "conflict", PlatformError), (400, "invalid", PlatformError),
    (403, "quotaExceeded", PlatformError), (403, "insufficientPermissions", AuthError),
])
def test_google_errors_map_to_adapter_errors(status: int, reason: str,
                                             error: type[Exception]) -> None:
    body = {"error": {"code": status, "message": f"it said no at {SESSION}",
                      "errors": [{"reason": reason, "message": "x"}]}}
    found = from_status(status, body, {"Retry-After": "7"}, "uploading gs://b/o", SESSION)
    assert type(found) is error
    text = str(found)
    assert text.startswith(f"Google Cloud: uploading gs://b/o failed: HTTP {status}: it said no at")
    assert (f"({reason})" in text) == bool(reason)
    assert "SECRET1" not in text
    if error is RetryableError:
        assert found.retry_after == 7.0


def test_an_answer_cut_short_is_retryable_and_masks_the_session() -> None:
    """What tests/faults' truncated and reset answers give requests: the upload asks GCS what it
    holds and goes on, rather than failing the task."""
    from http.client import IncompleteRead

    from requests.exceptions import ChunkedEncodingError
    from urllib3.exceptions import ProtocolError

    from adapters.gcp.gcs_errors import MASK, translate

    session = "https://storage.example/upload?upload_id=SESSION-ID"
    cut = ChunkedEncodingError(ProtocolError(f"Connection broken reading {session}",
                                             IncompleteRead(b"", 1)))
    found = translate(cut, "uploading gs://b/o", secret=session)
    assert found.retryable
    assert str(found).startswith("Google Cloud: uploading gs://b/o failed: the answer was cut short")
    assert "SESSION-ID" not in str(found) and MASK in str(found)
