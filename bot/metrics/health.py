"""``/readyz``: is this process able to work tasks? The task database answers, the catalog is
loaded, and the tools the compositor needs for the templates this runner takes are found (the
list ``layerbot check`` prints, for those templates only)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, get_args

import adapters
from adapters.base import ConnectorConfig, DiskFormat
from bot.catalog import Catalog
from bot.metrics.single_flight import SingleFlight
from bot.store.backends import shown
from bot.store.interface import Store
from compositor.tools import ToolStatus, find_tool, required_tools

log = logging.getLogger(__name__)

#: a database that takes longer than this to answer SELECT 1 is not ready
STORE_TIMEOUT = 5.0


def taken_by(catalog: Catalog, tags: Collection[str]) -> dict[str, ConnectorConfig]:
    """The connectors whose tasks a runner with ``tags`` claims: those whose runner_tags are all
    among them (untagged ones included), as the runner's claim filter does."""
    have = set(tags)
    return {name: c for name, c in catalog.connectors.items() if set(c.runner_tags) <= have}


def formats_of(connector: ConnectorConfig) -> set[str]:
    """The disk format the connector's adapter wants, from its configuration: no adapter is
    created (that would open sessions and import platform SDKs). An adapter type that does not
    say (one registered from outside layerbot without ``format_for``) counts as any format."""
    format_for = getattr(adapters.adapter_class(connector.type), "format_for", None)
    if format_for is None:
        return set(get_args(DiskFormat))
    return {str(format_for(connector))}


def tools_for(catalog: Catalog, tags: Collection[str]) -> list[ToolStatus]:
    """The tools compositing the templates this runner takes needs (the list ``layerbot check``
    prints, for those templates only)."""
    taken = taken_by(catalog, tags)
    formats: set[str] = set()
    filesystems = {"ext4"}
    for name, template in catalog.templates.items():
        connector = taken.get(template.connector)
        if connector is None:
            continue
        filesystems.add(template.disk.filesystem)
        try:
            formats |= formats_of(connector)
        except Exception as exc:  # left to ``layerbot check`` and the publish to report
            log.warning("readiness: template %s: no disk format: %s", name, type(exc).__name__)
    return required_tools(sorted(formats), sorted(filesystems))


@dataclass
class Readiness:
    store: Store
    catalog: Catalog | None
    #: found once at start; whether each is still there, per call
    tools: list[ToolStatus] = field(default_factory=list)
    #: SELECT 1 on a thread of its own: a store that hangs holds no thread of the shared pool
    _ping: SingleFlight[object] = field(init=False, repr=False)
    #: the last detail logged per failed check
    _logged: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._ping = SingleFlight(lambda: self.store.rows("SELECT 1"), "layerbot-readyz")

    @classmethod
    def of(cls, store: Store, catalog: Catalog, tags: Collection[str] = ()) -> Readiness:
        """Readiness of a runner taking the tasks of ``tags`` (none: untagged connectors only)."""
        return cls(store, catalog, tools_for(catalog, tags))

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, what was checked): each check is "ok" or a short code; the body is served on
        serve's public port, so the details (the database's location, the install command) go
        to the log, never into it."""
        checks: dict[str, Any] = {"store": await self._store(), "catalog": self._catalog()}
        missing = [t for t in self.tools if find_tool(t.name) is None]
        checks["tools"] = "ok" if not missing else {"missing": [t.name for t in missing]}
        if missing:
            self._log_once("tools", "readiness: tools missing: %s (sudo apt-get install -y %s)",
                           ", ".join(t.name for t in missing), " ".join(sorted({t.package for t in missing})))
        else:
            self._logged.pop("tools", None)
        return all(v == "ok" for v in checks.values()), checks

    async def _store(self) -> str:
        try:
            await self._ping.wait(STORE_TIMEOUT)
        except TimeoutError:
            self._log_once("store", "readiness: the task database %s did not answer within %g s",
                           shown(self.store.location), STORE_TIMEOUT)
            return "timeout"
        except Exception as exc:  # the store's errors name the database, never a password
            self._log_once("store", "readiness: the task database %s is unreachable: %s",
                           shown(self.store.location), exc)
            return "unreachable"
        self._logged.pop("store", None)
        return "ok"

    def _catalog(self) -> str:
        if self.catalog is None or not self.catalog.templates:
            return "not_loaded"
        return "ok"

    def _log_once(self, check: str, message: str, *args: object) -> None:
        """Log a failed check when what it says changes: a load balancer asks every few seconds."""
        said = message % args
        if self._logged.get(check) != said:
            self._logged[check] = said
            log.warning("%s", said)
