"""Upload the gce-tar artifact to Cloud Storage with a resumable upload, in chunks.

The session is created by google-cloud-storage (``Blob.create_resumable_upload_session``); the
chunks follow Google's resumable-upload protocol (PUT with ``Content-Range``; 308 and a
``Range`` of what GCS persisted, until 200) over an authorised ``requests`` session.
google-resumable-media's ``ResumableUpload`` cannot attach to a session another process made
without setting its private attributes, and its own retry loop would hide Retry-After from
:func:`adapters.retry.retrying`, so the protocol's few requests are made here.

The session URL is recorded in the task's resources (:class:`GcsUpload`): a runner that takes
the task over asks GCS how many bytes it holds (a status query) and sends only the rest. The
URL authorises uploading to that one object for a week, so it is kept like the task's other
resources (the runner's own database) but never shown: :meth:`GcsUpload.describe`, its repr
and every error message mask it.

SDK imports are inside functions: importing this module loads no Google library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import Field

from adapters.base import AdapterError, PlatformError, ProgressFn, PublishContext, RetryableError
from adapters.gcp.gcs_errors import from_status, translate
from adapters.resources import Lifetime, Resource, latest
from adapters.retry import DEFAULT, RetryPolicy, retrying

if TYPE_CHECKING:
    import requests
    from google.auth.credentials import Credentials
    from google.cloud import storage

log = logging.getLogger(__name__)
T = TypeVar("T")

MIB = 1 << 20
#: GCS accepts chunks (all but the last) only in multiples of 256 KiB
CHUNK_QUANTUM = 256 * 1024
CONTENT_TYPE = "application/gzip"
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
#: a status query's answers that say the session is gone (expired after a week, or cancelled)
_GONE = (404, 410, 499)


def object_name(template: str, task_id: str) -> str:
    """Where a task's tarball goes in the bucket."""
    return f"layerbot/{template}/{task_id}.tar.gz"


@dataclass(frozen=True)
class StorageAccess:
    """How to reach Cloud Storage; tests inject an endpoint, anonymous credentials, small chunks."""

    project: str
    #: google-auth credentials; None: application default credentials
    credentials: Credentials | None = None
    #: e.g. "http://127.0.0.1:8123" (an emulator, a private endpoint); None: Google's
    endpoint: str | None = None
    chunk_size: int = 16 * MIB
    #: seconds to wait for one request's answer (a chunk's included)
    timeout: float = 300.0
    retry: RetryPolicy = DEFAULT

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.chunk_size % CHUNK_QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of 256 KiB, not {self.chunk_size}")


class GcsUpload(Resource):
    """The tarball's object and its resumable session. Staging: only the image needs it."""

    kind: ClassVar[str] = "gcp-upload"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING
    bucket: str
    name: str
    size: int
    #: CRC-32C of the artifact (base64, as GCS reports it): a resumed upload must send the same bytes
    crc32c: str
    #: authorises the upload: masked in every message, never logged
    session_url: str = Field(repr=False)
    #: the object's generation once the upload finished: cleanup deletes that generation (a
    #: later object of the same name, someone else's, is left alone)
    generation: int | None = None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def describe(self) -> str:
        return f"Cloud Storage object {self.uri}"


@dataclass(frozen=True)
class Uploaded:
    upload: GcsUpload
    #: bytes sent by this call (the rest of a resumed upload)
    sent: int
    #: bytes GCS already had when this call started
    resumed_from: int


def file_crc32c(path: Path, block: int = 8 * MIB) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while data := fh.read(block):
            checksum.update(data)
    return base64.b64encode(checksum.digest()).decode("ascii")


def _persisted(headers: Mapping[str, str]) -> int:
    """Bytes GCS holds from a 308's ``Range: bytes=0-N`` (no Range: none yet)."""
    value = headers.get("Range")
    if not value:
        return 0
    unit, _, span = value.partition("=")
    first, _, last = span.partition("-")
    if unit.strip() != "bytes" or first.strip() != "0" or not last.strip().isdigit():
        raise PlatformError(f"Google Cloud: the upload's status has an unexpected Range {value!r}")
    return int(last) + 1


class Storage:
    """Cloud Storage calls for one connector; blocking SDK calls run in threads."""

    def __init__(self, access: StorageAccess) -> None:
        self.access = access
        self._client: storage.Client | None = None
        self._http: requests.Session | None = None
        #: (path, size, mtime) -> CRC-32C: a takeover reads a large tarball once, not per check
        self._crcs: dict[tuple[str, int, int], str] = {}

    async def checksum(self, artifact: Path) -> str:
        """The artifact's CRC-32C (base64), computed once while the file is unchanged."""
        stat = artifact.stat()
        key = (str(artifact), stat.st_size, stat.st_mtime_ns)
        if key not in self._crcs:
            self._crcs[key] = await asyncio.to_thread(file_crc32c, artifact)
        return self._crcs[key]

    # ------------------------------------------------------------ clients
    def _credentials(self) -> Credentials:
        if self.access.credentials is not None:
            return self.access.credentials
        import google.auth

        credentials, _ = google.auth.default(scopes=_SCOPES)
        return credentials

    def _storage(self) -> storage.Client:
        if self._client is None:
            from google.cloud import storage

            options = {"api_endpoint": self.access.endpoint} if self.access.endpoint else None
            self._client = storage.Client(project=self.access.project,
                                          credentials=self._credentials(), client_options=options)
        return self._client

    def _session(self) -> requests.Session:
        if self._http is None:
            from google.auth.transport.requests import AuthorizedSession

            self._http = AuthorizedSession(self._credentials())
        return self._http

    async def _call(self, doing: str, call: Callable[[], T], secret: str | None = None) -> T:
        """``call()`` in a thread, its exceptions as adapter errors."""
        try:
            return await asyncio.to_thread(call)
        except AdapterError:
            raise
        except Exception as exc:
            raise translate(exc, doing, secret) from None

    # ------------------------------------------------------------ the protocol
    async def begin(self, bucket: str, name: str, artifact: Path) -> GcsUpload:
        """A new resumable session for ``artifact`` (record it before sending)."""
        size = artifact.stat().st_size
        if size == 0:
            raise PlatformError(f"Google Cloud: {artifact.name} is empty: nothing to upload")
        crc = await self.checksum(artifact)

        def create() -> str:
            blob = self._storage().bucket(bucket).blob(name)
            url: str = blob.create_resumable_upload_session(
                content_type=CONTENT_TYPE, size=size, timeout=self.access.timeout, checksum=None)
            return url

        url = await self._call(f"starting the upload to gs://{bucket}/{name}", create)
        return GcsUpload(bucket=bucket, name=name, size=size, crc32c=crc, session_url=url)

    def _put(self, upload: GcsUpload, headers: dict[str, str], body: bytes) -> requests.Response:
        return self._session().put(upload.session_url, data=body, headers=headers,
                                   timeout=(30, self.access.timeout))

    async def persisted(self, upload: GcsUpload) -> int | None:
        """How many bytes GCS holds for the session (``size``: complete); None when the session
        is gone (expired or cancelled)."""
        doing = f"asking GCS how much of {upload.uri} it has"
        headers = {"Content-Range": f"bytes */{upload.size}", "Content-Length": "0"}
        response = await self._call(doing, lambda: self._put(upload, headers, b""),
                                    upload.session_url)
        if response.status_code == 308:
            return _persisted(response.headers)
        if response.status_code in (200, 201):
            return upload.size
        if response.status_code in _GONE:
            return None
        raise from_status(response.status_code, response.content, response.headers, doing,
                          upload.session_url)

    async def uploaded_bytes(self, upload: GcsUpload, artifact: Path) -> int:
        """What GCS holds of ``artifact`` in ``upload`` (0: start over: the session is gone or
        the artifact is not the one it was started for)."""
        size = artifact.stat().st_size
        if size != upload.size or await self.checksum(artifact) != upload.crc32c:
            return 0
        return await self.persisted(upload) or 0

    async def _send_chunk(self, upload: GcsUpload, artifact: Path, offset: int, counter: list[int]
                          ) -> tuple[int, Mapping[str, Any] | None]:
        """One chunk from ``offset`` (its length added to ``counter``); (bytes GCS now holds,
        the object once complete)."""
        def read() -> bytes:
            with open(artifact, "rb") as fh:
                return os.pread(fh.fileno(), self.access.chunk_size, offset)

        body = await asyncio.to_thread(read)
        counter[0] += len(body)
        end = offset + len(body) - 1
        headers = {"Content-Range": f"bytes {offset}-{end}/{upload.size}",
                   "Content-Type": CONTENT_TYPE}
        doing = f"uploading {upload.uri}"
        response = await self._call(doing, lambda: self._put(upload, headers, body),
                                    upload.session_url)
        if response.status_code == 308:
            return _persisted(response.headers), None
        if response.status_code in (200, 201):
            return upload.size, _object_of(response, doing)
        raise from_status(response.status_code, response.content, response.headers, doing,
                          upload.session_url)

    async def send(self, upload: GcsUpload, artifact: Path, progress: ProgressFn,
                   offset: int = 0) -> tuple[int, Mapping[str, Any]]:
        """Send ``artifact`` from ``offset`` to the end; (bytes sent, the object's metadata).

        A retryable failure (429, 5xx, a dropped connection) is retried after its Retry-After;
        the retry first asks GCS what it persisted, which may be less than was sent."""
        sent = [0]
        held = offset
        unsure = False  # a chunk failed: GCS may hold less (or more) than ``held``
        reporter = _Progress(progress, upload.size)

        async def next_chunk() -> tuple[int, Mapping[str, Any] | None]:
            nonlocal held, unsure
            if unsure:
                found = await self.persisted(upload)
                if found is None:
                    raise PlatformError(f"Google Cloud: the upload session of {upload.uri} "
                                        "expired or was cancelled")
                held = found
            unsure = True
            result = await self._send_chunk(upload, artifact, held, sent)
            unsure = False
            return result

        done: Mapping[str, Any] | None = None
        while done is None and held < upload.size:
            held, done = await retrying(next_chunk, f"uploading {upload.uri}", self.access.retry)
            await reporter.report(held)
        if done is None:  # GCS held every byte already (a resumed, finished upload)
            done = await self._finished_object(upload)
        await reporter.report(upload.size, final=True)
        await self._verify(upload, done)
        return sent[0], done

    async def _finished_object(self, upload: GcsUpload) -> Mapping[str, Any]:
        blob = await self._call(f"reading {upload.uri}",
                                lambda: self._storage().bucket(upload.bucket).get_blob(upload.name))
        if blob is None:
            raise PlatformError(f"Google Cloud: GCS holds every byte of {upload.uri} but no object")
        return {"size": blob.size, "crc32c": blob.crc32c, "generation": blob.generation}

    async def _verify(self, upload: GcsUpload, done: Mapping[str, Any]) -> None:
        """The object GCS made is the artifact (size and CRC-32C); else it is deleted."""
        size, crc = int(done.get("size") or -1), done.get("crc32c")
        if size == upload.size and crc == upload.crc32c:
            return
        await self.remove(upload)
        raise PlatformError(f"Google Cloud: {upload.uri} holds {size} bytes with CRC-32C {crc}, "
                            f"not the artifact's {upload.size} bytes with {upload.crc32c}")

    # ------------------------------------------------------------ what an adapter calls
    async def upload(self, ctx: PublishContext, bucket: str, name: str) -> Uploaded:
        """Upload ``ctx.artifact`` to gs://bucket/name, continuing the task's recorded session
        when GCS still has it and it was started for this artifact. A recorded upload that is
        not continued (another artifact, another bucket or name, an expired session) is
        removed first (its session cancelled, the object it made deleted), then replaced."""
        recorded = latest(ctx.resources, GcsUpload)
        held = 0
        if recorded is not None and (recorded.bucket, recorded.name) == (bucket, name):
            held = await self.uploaded_bytes(recorded, ctx.artifact)
        if recorded is not None and held == 0:
            await self.remove(recorded)
            fresh = await self.begin(bucket, name, ctx.artifact)
            await ctx.replace(recorded, fresh)
            recorded = fresh
        elif recorded is None:
            recorded = await self.begin(bucket, name, ctx.artifact)
            await ctx.record(recorded)
        if held:
            log.info("%s: GCS holds %d of %d bytes of %s; sending the rest", ctx.task_id, held,
                     recorded.size, recorded.uri)
            await ctx.progress(held / recorded.size, f"resuming the upload of {recorded.uri} at "
                                                     f"byte {held}")
        sent, done = await self.send(recorded, ctx.artifact, ctx.progress, held)
        if done.get("generation") is not None:
            finished = recorded.model_copy(update={"generation": int(done["generation"])})
            await ctx.replace(recorded, finished)
            recorded = finished
        return Uploaded(recorded, sent, held)

    async def remove(self, upload: GcsUpload) -> list[str]:
        """Cancel the session and delete the object (the generation it made, when known);
        [] when neither existed."""
        from google.api_core.exceptions import NotFound

        cancelled = await self._call(
            f"cancelling the upload of {upload.uri}",
            lambda: self._session().delete(upload.session_url, timeout=(30, self.access.timeout)),
            upload.session_url)

        def delete() -> bool:
            try:
                self._storage().bucket(upload.bucket).blob(
                    upload.name, generation=upload.generation).delete(timeout=self.access.timeout)
            except NotFound:
                return False
            return True

        deleted = await self._call(f"deleting {upload.uri}", delete)
        if deleted:
            return [f"deleted {upload.describe()}"]
        return [f"cancelled the upload to {upload.uri}"] if cancelled.status_code == 499 else []

    async def close(self) -> None:
        http, self._http = self._http, None
        client, self._client = self._client, None
        if http is not None:
            await asyncio.to_thread(http.close)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)


class _Progress:
    """At most one report per percent or second: chunks can be small."""

    def __init__(self, progress: ProgressFn, size: int) -> None:
        self.progress, self.size = progress, size
        self.last = (0.0, -1.0)

    async def report(self, held: int, final: bool = False) -> None:
        fraction = held / self.size
        when, shown = self.last
        now = time.monotonic()
        if final or now - when >= 1.0 or fraction - shown >= 0.01:
            self.last = (now, fraction)
            await self.progress(fraction, f"uploading to Google Cloud Storage: "
                                          f"{held / MIB:.0f} of {self.size / MIB:.0f} MiB")


def _object_of(response: Any, doing: str) -> Mapping[str, Any]:
    """The object GCS describes in a final answer; a body cut short (the connection dropped
    after GCS stored the last chunk) is retryable: the retry asks GCS what it holds."""
    try:
        found = response.json()
    except ValueError:  # requests' JSONDecodeError
        raise RetryableError(f"Google Cloud: {doing} failed: the answer was cut short "
                             f"({len(response.content)} bytes of JSON)") from None
    if not isinstance(found, Mapping):
        raise PlatformError(f"Google Cloud: {doing}: the answer is not a JSON object")
    return found
