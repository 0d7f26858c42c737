"""The no-op connector type of bench/queue_bench.py: publishing does nothing and succeeds at once, so
a task's time is the queue's (claim, lease, updates, events, release), not a platform's."""

from __future__ import annotations

from typing import ClassVar, Literal

from adapters.base import Capability, ConnectorConfig, DiskFormat, PlatformStep, PublishContext, Published
from adapters.resources import Resource
from adapters.steps import Step


class Config(ConnectorConfig):
    type: Literal["noop"]


class Adapter:
    type_name: ClassVar[str] = "noop"
    platform: ClassVar[str] = "No-op"
    capabilities: ClassVar[Capability] = Capability.NONE

    def __init__(self, config: Config) -> None:
        self.config = config

    def disk_format(self) -> DiskFormat:
        return "raw"

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("publish", self, self._publish)]

    async def _publish(self, ctx: PublishContext) -> None:
        ctx.published = Published(link=f"noop://{ctx.image_name}", summary=f"nothing ({ctx.image_name})")

    def next_steps(self, published: Published) -> str:
        return "Nothing to do: a benchmark task."

    async def remove(self, resource: Resource) -> list[str]:
        return []

    async def close(self) -> None:
        pass
