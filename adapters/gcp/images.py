"""Images: create one from the uploaded tarball, wait on the global operation, delete it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.base import Backoff, NotFoundError, PlatformError
from adapters.gcp.compute_faults import PLATFORM, operation_error
from adapters.gcp.compute_session import ComputeSession
from adapters.gcp.gcp_config import Config

Progress = Callable[[float, str], Awaitable[None]]


def source_url(bucket: str, object_name: str) -> str:
    """rawDisk.source: the form the Image schema documents
    (https://storage.googleapis.com/BUCKET/OBJECT), also with a private storage endpoint:
    Compute Engine reads the object itself."""
    from urllib.parse import quote

    return f"https://storage.googleapis.com/{bucket}/{quote(object_name)}"


def new_request_id() -> str:
    """A fresh ``requestId`` (Compute Engine wants a UUID): one per recorded image."""
    return str(uuid.uuid4())


def image_body(config: Config, name: str, source: str, labels: dict[str, str]) -> Any:
    """The Image resource. Blocking: importing google.cloud.compute_v1 takes seconds, so it
    is called on a session thread, never on the event loop."""
    from google.cloud import compute_v1

    return compute_v1.Image(
        name=name, family=config.image_family, raw_disk=compute_v1.RawDisk(source=source),
        guest_os_features=[compute_v1.GuestOsFeature(type_=f) for f in config.guest_os_features],
        licenses=list(config.licenses), labels=labels,
        storage_locations=list(config.storage_locations), architecture=config.architecture)


async def insert(session: ComputeSession, config: Config, name: str, source: str,
                 labels: dict[str, str], request_id: str) -> str:
    """Start ``images.insert``; the name of its global operation. Safe to repeat with the same
    ``request_id``: Compute Engine answers with the first insert's operation."""
    def call(c: Any) -> Any:
        from google.cloud import compute_v1

        request = compute_v1.InsertImageRequest(
            project=config.project, image_resource=image_body(config, name, source, labels),
            request_id=request_id)
        return c.images.insert_unary(request=request)

    operation = await session.call(call, f"creating image {name}", idempotent=True)
    return str(operation.name)


async def wait(session: ComputeSession, project: str, operation: str, doing: str,
               poll: tuple[float, float], progress: Progress | None = None) -> None:
    """Poll the global operation (short calls: a cancel is never held up) until DONE;
    its error as an adapter error keeping Google's code and message."""
    backoff = Backoff(*poll)
    last = None
    while True:
        op = await session.call(
            lambda c: c.global_operations.get(project=project, operation=operation),
            f"{doing}: reading operation {operation}", idempotent=True)
        if op.error and op.error.errors:
            raise operation_error(op, doing)
        if op.status.name == "DONE":
            return
        state = (op.status.name, op.progress)
        if state != last:
            last = state
            backoff.reset()
            if progress is not None:
                await progress(min(op.progress, 99) / 100, f"{doing} ({op.status.name})")
        await backoff.sleep()


async def status(session: ComputeSession, project: str, name: str) -> tuple[str, dict[str, str]]:
    """The image's status and labels; NotFoundError when there is none."""
    image = await session.call(lambda c: c.images.get(project=project, image=name),
                               f"reading image {name}", idempotent=True)
    return str(image.status), dict(image.labels)


async def settled(session: ComputeSession, project: str, name: str, poll: tuple[float, float],
                  bound: float) -> tuple[str, dict[str, str]]:
    """The image's status and labels once it is no longer PENDING (Compute Engine refuses to
    delete a PENDING image: 400 resourceNotReady); PlatformError after ``bound`` seconds."""
    backoff = Backoff(*poll)
    deadline = time.monotonic() + bound
    while True:
        found, labels = await status(session, project, name)
        if found != "PENDING":
            return found, labels
        if time.monotonic() >= deadline:
            raise PlatformError(f"{PLATFORM}: image {name} is still PENDING after {bound:g} s")
        await backoff.sleep()


async def take_over(session: ComputeSession, project: str, name: str, task_id: str,
                    poll: tuple[float, float], bound: float) -> bool:
    """After a 409 for ``name``: whether the image is this task's (its ``layerbot-task``
    label; an earlier attempt's insert, its record lost), waiting until it is not PENDING."""
    from adapters.gcp.names import label_value

    found, labels = await settled(session, project, name, poll, bound)
    if labels.get("layerbot-task") != label_value(task_id):
        return False
    check_ready(name, found)
    return True


async def delete(session: ComputeSession, project: str, name: str, task_id: str,
                 poll: tuple[float, float], bound: float) -> list[str]:
    """Delete the image if this task made it (its ``layerbot-task`` label); [] when it is
    gone. Another's image of the same name is left alone, which the line says. A PENDING
    image (a cancel during its creation) is waited for, at most ``bound`` seconds."""
    from adapters.gcp.names import label_value

    try:
        _, labels = await settled(session, project, name, poll, bound)
    except NotFoundError:
        return []
    if labels.get("layerbot-task") != label_value(task_id):
        return [f"kept Google Cloud image {name}: it was not made by task {task_id}"]
    try:
        operation = await session.call(
            lambda c: c.images.delete_unary(project=project, image=name),
            f"deleting image {name}", idempotent=True)
    except NotFoundError:
        return []
    await wait(session, project, str(operation.name), f"deleting image {name}", poll)
    return [f"{PLATFORM} image {name} (project {project})"]


def check_ready(name: str, found: str) -> None:
    if found != "READY":
        raise PlatformError(f"{PLATFORM}: image {name} is {found} after its creation, not READY")
