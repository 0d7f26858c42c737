"""What a gcp publish records (adapters.resources): the image it creates, what the watch
needs once it is published, and the instance the watch saw running."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource


class GcpImage(Resource):
    """The image ``images.insert`` creates, recorded before the call. Removed only when it
    carries this task's ``layerbot-task`` label (a 409 leaves someone else's image alone).

    ``request_id`` is random, made when the image is recorded: a repeated insert (a retry, a
    runner taking the task over) reuses it while this record lives, so Compute Engine answers
    with the first insert's operation; once cleanup deleted the image (and forgot the
    record) the next attempt gets a new one, else Google would answer with that finished
    operation and make no image. "" in records made before it existed: a new one is made."""

    kind: ClassVar[str] = "gcp.image"
    project: str
    name: str
    task: str
    request_id: str = ""

    def describe(self) -> str:
        return f"Google Cloud image {self.name} (project {self.project})"


class GcpPublished(Resource):
    """What a publish left (``Published.resource``): the READY image and its zone's watch."""

    kind: ClassVar[str] = "gcp.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    project: str
    zone: str
    name: str
    published_at: float

    def describe(self) -> str:
        return f"Google Cloud image {self.name} (project {self.project})"


class GcpInstanceRan(Resource):
    """The watch saw this instance (booted from the image) RUNNING."""

    kind: ClassVar[str] = "gcp.instance_ran"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    instance: str
