"""What ``layerbot check`` found, gathered before it is printed as text or as JSON.

The checks run in stages, and a stage with problems ends the run (as the text output always
has): the catalog, each connector's SDK, the tar layers, planning each template, the tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from compositor.tools import ToolStatus


@dataclass(frozen=True)
class Problem:
    #: catalog, runner_dir, connector_sdk, tar_layer or plan
    stage: str
    message: str


@dataclass
class CheckReport:
    config: Path
    catalog: Catalog | None = None
    problems: list[Problem] = field(default_factory=list)
    tools: list[ToolStatus] = field(default_factory=list)

    @property
    def missing_packages(self) -> list[str]:
        return sorted({t.package for t in self.tools if not t.path})

    @property
    def ok(self) -> bool:
        return self.catalog is not None and not self.problems and not self.missing_packages

    def problems_of(self, *stages: str) -> list[str]:
        return [p.message for p in self.problems if p.stage in stages]

    def as_json(self) -> dict[str, Any]:
        from bot.cli.json_output import missing_tools_command

        counts = {"layers": None, "connectors": None, "templates": None}
        if self.catalog is not None:
            counts = {"layers": len(self.catalog.layers), "connectors": len(self.catalog.connectors),
                      "templates": len(self.catalog.templates)}
        missing = self.missing_packages
        return {
            "config": str(self.config), "ok": self.ok, **counts,
            "problems": [{"stage": p.stage, "message": p.message} for p in self.problems],
            "tools": [{"name": t.name, "path": t.path, "package": t.package, "found": bool(t.path)}
                      for t in self.tools],
            "missing_packages": missing,
            "install_command": missing_tools_command(missing) if missing else None,
        }


def _tar_layer_problems(catalog: Catalog) -> list[str]:
    """Every member header of every tar layer (a plain tar: seeks; a compressed one is read
    through, but only as far as the largest disk of a template using it holds), then each
    template's tar layers together against its disk. Problems as "key path: message"."""
    from compositor import CompositorError, DiskTooSmallError
    from compositor.budget import SpaceBudget
    from compositor.tarlayer import check_archive

    def disk_budget(template: Any) -> SpaceBudget:
        return SpaceBudget.for_disk(template.disk.filesystem, template.disk.size_gib)

    problems: list[str] = []
    unpacked: dict[str, int] = {}
    for name, layer in catalog.layers.items():
        if layer.source.is_dir():
            continue
        users = [disk_budget(t) for t in catalog.templates.values()
                 if name in dict(catalog.layers_of(t))]
        budget = max(users, key=lambda b: b.limit) if users else None
        try:
            unpacked[name] = check_archive(name, layer.source, budget)
        except CompositorError as exc:
            problems.append(f"layers.{name}.source: {exc}")
    for tname, template in catalog.templates.items():
        names = [n for n, _ in catalog.layers_of(template) if n in unpacked]
        budget = disk_budget(template)
        total = sum(unpacked[n] for n in names)
        if len(names) > 1 and total > budget.limit:
            too_big = DiskTooSmallError(total, budget.capacity, budget.size_gib)
            problems.append(f"templates.{tname}.disk.size_gib: layers {', '.join(names)}: "
                            f"{too_big}")
    return problems


def run_checks(config: Path, catalog: Catalog) -> CheckReport:
    """Check a loaded catalog; a stage with problems ends the run."""
    import adapters
    import compositor
    from bot.runner.planning import PlanError, plan
    from bot.runner_dirs import unwritable_dirs

    report = CheckReport(config, catalog)
    report.problems += [Problem("runner_dir", f"{config.name}: {p}") for p in unwritable_dirs(catalog.runner)]
    for name, connector in catalog.connectors.items():
        if (problem := adapters.missing_sdk(connector.type)) is not None:
            report.problems.append(Problem("connector_sdk",
                                           f"{config.name}: connectors.{name}.type: {problem}"))
    if not report.problems:
        report.problems += [Problem("tar_layer", f"{config.name}: {p}")
                            for p in _tar_layer_problems(catalog)]
    if report.problems:
        return report
    plans = []
    for name in catalog.templates:
        try:
            plans.append(plan(catalog, name, check_cache=False))
        except PlanError as exc:
            report.problems.append(Problem("plan", f"{config.name}: templates.{name}: {exc}"))
    if report.problems:
        return report
    formats = sorted({p.disk_format for p in plans})
    filesystems = sorted({p.filesystem for p in plans} | {"ext4"})
    report.tools = compositor.required_tools(formats, filesystems)
    return report
