"""A connector type for the planner's tests: planning it (``disk_format``) sleeps or raises an
exception that does not survive pickling. Register it with ``adapters.register``."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from adapters.base import Capability, ConnectorConfig, DiskFormat, PublishContext, Published
from adapters.resources import Resource
from adapters.steps import Step

CONNECTOR = """\
  slow:
    type: planning-test
    plan_seconds: {seconds}
    odd_error: {odd}
"""


def with_planning_connector(catalog: str, *, seconds: float = 0.0, odd: bool = False) -> str:
    """``catalog`` (tests.conftest.BASIC_CATALOG) with win10-office on this connector type."""
    connector = CONNECTOR.format(seconds=seconds, odd=str(odd).lower())
    text = catalog.replace("connectors:\n", "connectors:\n" + connector, 1)
    return text.replace("connector: folder", "connector: slow")


class OddError(Exception):
    """Its __init__ takes other arguments than its .args: unpickling it raises TypeError."""

    def __init__(self, host: str, code: int) -> None:
        super().__init__(f"{host} answered {code}")


class Config(ConnectorConfig):
    type: Literal["planning-test"]
    plan_seconds: float = 0.0
    odd_error: bool = False


class Adapter:
    type_name: ClassVar[str] = "planning-test"
    platform: ClassVar[str] = "Planning test"
    capabilities: ClassVar[Capability] = Capability(0)

    def __init__(self, config: Config) -> None:
        self.config = config

    def disk_format(self) -> DiskFormat:
        time.sleep(self.config.plan_seconds)
        if self.config.odd_error:
            raise OddError("hv1.example", 503)
        return "raw"

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        raise AssertionError("only planned")

    def next_steps(self, published: Published) -> str:
        raise AssertionError("only planned")

    async def remove(self, resource: Resource) -> list[str]:
        raise AssertionError("only planned")

    async def close(self) -> None:
        pass
