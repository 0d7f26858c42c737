"""A small typed client of Prism Central's v3 REST API (basic auth, JSON) over aiohttp:
entity calls, ``/list`` look-ups, following a task to SUCCEEDED, and the streamed upload of
an image file. aiohttp is imported inside the functions that use it."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import (
    AdapterError,
    Backoff,
    PlatformError,
    RefusedError,
    RetryableError,
    error_words,
    secret_from_env,
    untrusted_certificate,
    untrusted_words,
)
from adapters.nutanix.prism_errors import PLATFORM, from_status, task_failed
from adapters.retry import DEFAULT, RetryPolicy, retrying

if TYPE_CHECKING:
    import aiohttp

    from adapters.nutanix.nutanix_config import Config

API = "/api/nutanix/v3"
TASK_RUNNING = ("QUEUED", "RUNNING", "PENDING")
TASK_FAILED = ("FAILED", "ABORTED", "SUSPENDED")
Progress = Callable[[float, str], Awaitable[None]]


@dataclass(frozen=True)
class Clients:
    """How the adapter talks to Prism (tests inject short polls and retries)."""

    #: first and longest seconds between two reads of a task or an entity
    task_poll: tuple[float, float] = (1.0, 15.0)
    #: first and longest seconds between two rounds of the power-state watch
    watch_poll: tuple[float, float] = (5.0, 60.0)
    #: seconds for one API call (not the upload, which may take hours)
    call_timeout: float = 120.0
    #: seconds without a byte sent or received before an upload is given up (then retried)
    upload_idle_timeout: float = 300.0
    upload_chunk: int = 1 << 20
    retry: RetryPolicy = DEFAULT


def endpoint_key(config: Config) -> tuple[str, str, str, bool, str]:
    """Who talks to which Prism: the URL, the user, a digest of the password (never the
    password), and the TLS settings."""
    user = secret_from_env(config.user_env)
    digest = hashlib.sha256(secret_from_env(config.password_env).encode()).hexdigest()
    return (config.prism_url.lower(), user, digest, config.insecure, str(config.ca_file or ""))


def ssl_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class PrismClient:
    def __init__(self, config: Config, clients: Clients) -> None:
        self.config = config
        self.clients = clients
        self.base = config.prism_url + API
        self._http: aiohttp.ClientSession | None = None
        self.closed = False

    def _session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self.closed:
            raise AdapterError(f"{PLATFORM}: the client of {self.config.prism_url} is closed")
        if self._http is None:
            auth = aiohttp.BasicAuth(secret_from_env(self.config.user_env),
                                     secret_from_env(self.config.password_env))
            self._http = aiohttp.ClientSession(
                auth=auth, connector=aiohttp.TCPConnector(ssl=ssl_context(self.config)),
                headers={"Accept": "application/json"})
        return self._http

    async def _once(self, method: str, path: str, body: dict[str, Any] | None,
                    doing: str) -> dict[str, Any]:
        import aiohttp

        try:
            async with self._session().request(
                    method, self.base + path, json=body,
                    timeout=aiohttp.ClientTimeout(total=self.clients.call_timeout)) as resp:
                try:
                    data: Any = await resp.json(content_type=None)
                except ValueError:
                    data = await resp.text()
                if resp.status >= 400:
                    raise from_status(resp.status, data, doing, resp.headers.get("Retry-After"))
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise unreachable(exc, doing, f"{PLATFORM}: {doing}: {error_words(exc)}") from exc
        except aiohttp.ClientPayloadError as exc:  # its text quotes aiohttp's internals
            raise RetryableError(f"{PLATFORM}: {doing}: the answer was cut short") from exc

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                   doing: str, idempotent: bool = False) -> dict[str, Any]:
        """One JSON call; a safe-to-repeat one is retried after a transient failure, any other
        only after Prism refused it before acting (429, 503)."""
        return await retrying(lambda: self._once(method, path, body, doing), doing,
                              self.clients.retry, only=(AdapterError,) if idempotent else (RefusedError,))

    async def find(self, kind: str, name_attribute: str, name: str) -> list[dict[str, Any]]:
        """The entities of ``kind`` named ``name`` (``POST /{kind}s/list`` with a FIQL filter)."""
        found = await self.call("POST", f"/{kind}s/list",
                                {"kind": kind, "filter": f"{name_attribute}=={name}", "length": 20},
                                doing=f"looking up {kind} {name!r}", idempotent=True)
        entities = found.get("entities") or []
        # a FIQL == may match case-insensitively or by prefix: the name must be the same
        return [e for e in entities if entity_name(e) == name]

    async def delete(self, kind: str, uuid: str, doing: str) -> bool:
        """Delete an entity and follow its task; False when it was already gone."""
        from adapters.base import NotFoundError

        try:
            answer = await self.call("DELETE", f"/{kind}s/{uuid}", doing=doing, idempotent=True)
        except NotFoundError:
            return False
        task = task_uuid(answer)
        if task:
            await self.wait_task(task, doing)
        return True

    async def wait_task(self, uuid: str, doing: str, progress: Progress | None = None) -> None:
        """Follow a task until SUCCEEDED; TaskFailed with Prism's error detail otherwise."""
        backoff = Backoff(*self.clients.task_poll)
        last = ""
        while True:
            task = await self.call("GET", f"/tasks/{uuid}", doing=f"{doing}: reading task {uuid}",
                                   idempotent=True)
            status = str(task.get("status", ""))
            if status == "SUCCEEDED":
                return
            if status in TASK_FAILED:
                raise task_failed(task, doing)
            if progress is not None and status != last:
                pct = task.get("percentage_complete")
                await progress(float(pct) / 100 if isinstance(pct, int | float) else 0.0,
                               f"{doing}: task {status}")
            last = status
            await backoff.sleep()

    async def upload(self, image_uuid: str, artifact: Path, doing: str, progress: Progress) -> None:
        """``PUT /images/{uuid}/file``: the file streamed from disk, whole (Prism has no
        ranged upload); a cut-off upload is retried from the start."""
        size = artifact.stat().st_size
        await retrying(lambda: self._upload_once(image_uuid, artifact, size, doing, progress),
                       doing, self.clients.retry)

    async def _upload_once(self, image_uuid: str, artifact: Path, size: int, doing: str,
                           progress: Progress) -> None:
        import aiohttp

        chunk = self.clients.upload_chunk

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            with open(artifact, "rb") as f:
                while data := await asyncio.to_thread(f.read, chunk):
                    yield data
                    sent += len(data)
                    await progress(sent / size, f"{doing}: {sent >> 20} of {size >> 20} MiB")

        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.clients.upload_idle_timeout)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            async with self._session().put(f"{self.base}/images/{image_uuid}/file", data=body(),
                                           headers=headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    try:
                        said: Any = await resp.json(content_type=None)
                    except ValueError:
                        said = await resp.text()
                    raise from_status(resp.status, said, doing, resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise unreachable(exc, doing, f"{PLATFORM}: {doing}: the upload was cut off "
                                          f"({error_words(exc)})") from exc

    async def close(self) -> None:
        self.closed = True
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()


def unreachable(exc: BaseException, doing: str, text: str) -> AdapterError:
    """A failed connection (``text``) is worth another try, unless Prism's certificate was
    refused: the same one comes back."""
    reason = untrusted_certificate(exc)
    if reason is not None:
        return PlatformError(f"{PLATFORM}: {doing}: {untrusted_words(reason)}")
    return RetryableError(text)


def entity_name(entity: dict[str, Any]) -> str | None:
    for part in ("spec", "status"):
        name = (entity.get(part) or {}).get("name")
        if isinstance(name, str):
            return name
    return None


def task_uuid(answer: dict[str, Any]) -> str | None:
    context = (answer.get("status") or {}).get("execution_context") or {}
    uuid = context.get("task_uuid")
    if isinstance(uuid, list):
        return str(uuid[0]) if uuid else None
    return str(uuid) if uuid else None
