"""What a gcp publish records (adapters.resources): the image it creates, what the watch
needs once it is published, and the instance the watch saw running."""

from __future__ import annotations

from typing import ClassVar

from adapters.resources import Lifetime, Resource


class GcpImage(Resource):
    """The image ``images.insert`` creates, recorded before the call. Removed only when it
    carries this task's ``layerbot-task`` label (a 409 leaves someone else's image alone)."""

    kind: ClassVar[str] = "gcp.image"
    project: str
    name: str
    task: str

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
