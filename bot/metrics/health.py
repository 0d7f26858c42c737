"""``/readyz``: is this process able to work tasks? The task database answers, the catalog is
loaded, and the tools the compositor needs for the catalog's formats are found (the same
list ``layerbot check`` prints)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.catalog import Catalog
from bot.metrics.single_flight import SingleFlight
from bot.store.backends import shown
from bot.store.interface import Store
from compositor.tools import ToolStatus, find_tool, required_tools

if TYPE_CHECKING:
    from bot.runner.planning import PublishPlan

log = logging.getLogger(__name__)

#: a database that takes longer than this to answer SELECT 1 is not ready
STORE_TIMEOUT = 5.0


#: a template's plan (its disk format): in a thread here, or serve's planner process, which
#: keeps platform SDKs out of serve's own process
PlanOne = Callable[[str], Awaitable["PublishPlan"]]


def planned_here(catalog: Catalog) -> PlanOne:
    async def plan_one(name: str) -> PublishPlan:
        from bot.runner.planning import plan

        return await asyncio.to_thread(plan, catalog, name, check_cache=False)

    return plan_one


async def tools_for(catalog: Catalog, plan_one: PlanOne) -> list[ToolStatus]:
    """The tools compositing the catalog's templates needs, as ``layerbot check`` finds them
    (a template that cannot be planned is left to ``check`` and its publish to report)."""
    formats: set[str] = set()
    for name in catalog.templates:
        try:
            formats.add((await plan_one(name)).disk_format)
        except Exception as exc:
            log.warning("readiness: template %s cannot be planned: %s", name, type(exc).__name__)
    filesystems = {t.disk.filesystem for t in catalog.templates.values()} | {"ext4"}
    return required_tools(sorted(formats), sorted(filesystems))


@dataclass
class Readiness:
    store: Store
    catalog: Catalog | None
    #: found once at start (planning creates adapters); whether each is still there, per call
    tools: list[ToolStatus] = field(default_factory=list)
    #: SELECT 1 on a thread of its own: a store that hangs holds no thread of the shared pool
    _ping: SingleFlight[object] = field(init=False, repr=False)
    #: the last detail logged per failed check
    _logged: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._ping = SingleFlight(lambda: self.store.rows("SELECT 1"), "layerbot-readyz")

    @classmethod
    async def of(cls, store: Store, catalog: Catalog, plan_one: PlanOne | None = None) -> Readiness:
        return cls(store, catalog, await tools_for(catalog, plan_one or planned_here(catalog)))

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
