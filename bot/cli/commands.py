"""The ``layerbot`` command: a thin edge over the library.

Exit codes: 0 every task done, 1 a task failed or was cancelled, 2 bad usage or config.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import click

from bot.cli import log_setup
from bot.cli.output import EXIT_FAILED, EXIT_USAGE, escape_markup, out
from bot.store import states
from bot.store.states import EventKind

if TYPE_CHECKING:  # the commands import these when they run: `--help` stays fast
    from bot.catalog import Catalog, Template
    from bot.runner.job_runner import JobRunner
    from bot.runner.planning import PublishPlan
    from bot.store.interface import Store
    from bot.store.model import Event, Task

class Context:
    def __init__(self, config: Path | None, db: str | None) -> None:
        self._config = config
        self._db = db

    @property
    def config_path(self) -> Path:
        from bot.catalog import default_path

        return default_path(self._config)

    @property
    def db_location(self) -> str:
        """A SQLite path or a postgresql:// URL (its password from PGPASSWORD or ~/.pgpass)."""
        from bot.store.backends import default_db_location

        return default_db_location(self._db)

    def catalog(self) -> Catalog:
        from bot.catalog import CatalogError, load_catalog

        try:
            return load_catalog(self.config_path)
        except CatalogError as exc:
            for problem in exc.problems:
                out().print(f"[red]error:[/red] {escape_markup(problem)}", soft_wrap=True)
            sys.exit(EXIT_USAGE)

    def store(self) -> Store:
        from bot.store.backends import open_store
        from bot.store.model import StoreError

        try:
            return open_store(self.db_location)
        except StoreError as exc:
            raise click.UsageError(str(exc)) from None

    def task(self, store: Store, task_id: str) -> Task:
        from bot.store.task_store import TaskNotFound

        try:
            return store.get(task_id)
        except TaskNotFound as exc:
            raise click.UsageError(str(exc)) from None


pass_ctx = click.make_pass_decorator(Context)


class LazyGroup(click.Group):
    """Commands whose modules load only when they run: the Slack stack for ``serve``, the qemu
    target's ``vm``. ``layerbot --help`` lists them from their summaries here, so it imports
    neither; they import nothing of this module but its output helpers (no import circle)."""

    #: name -> ("module:attribute", the summary ``--help`` shows; a test keeps it the command's)
    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "serve": ("bot.slack.serve:serve", "Run the Slack app, the job runner and the Slack notifier."),
        "vm": ("adapters.qemu.vm_cli:vm", "The VMs of tasks published to a QEMU target."),
        "db": ("bot.cli.db:db", "Upgrade the task database's schema or copy a SQLite one to PostgreSQL."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module, _, attr = self.lazy[cmd_name][0].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            elif (command := super().get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.option("--config", type=click.Path(path_type=Path), help="layerbot.yml "
              "(default: $LAYERBOT_CONFIG, else ./layerbot.yml)")
@click.option("--db", help="task database: a SQLite file or a postgresql://user@host/db URL, its "
              "password in PGPASSWORD or ~/.pgpass (default: $LAYERBOT_DB, else ./layerbot.db)")
@click.option("-v", "--verbose", is_flag=True, help="log debug details to stderr")
@click.pass_context
def main(ctx: click.Context, config: Path | None, db: str | None, verbose: bool) -> None:
    """layerbot: publish layered images from templates.

    Example: layerbot --config examples/demo/layerbot.yml publish demo-office --yes
    """
    log_setup.configure(verbose)
    ctx.obj = Context(config, db)


# ------------------------------------------------------------------ publish
def _print_plan(p: PublishPlan) -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_row("OS layer", p.os_layer)
    table.add_row("App layers", ", ".join(p.app_layers) or "none")
    table.add_row("Platform layer", p.platform_layer or "none")
    table.add_row("Connector", f"{p.connector} ({p.platform})")
    table.add_row("Disk", f"{p.size_gib} GiB {p.filesystem}, {p.disk_format}")
    table.add_row("Scripts", ", ".join(p.scripts) or "none")
    table.add_row("Cached disk", "yes, reused" if p.cache_hit else "no, will composite")
    out().print(f"[bold]{p.template}[/bold] {p.description}")
    out().print(table)


def _event_line(event: Event, template: str) -> str:
    colour = {EventKind.FAILED: "red", EventKind.DONE: "green", EventKind.CANCELLED: "yellow",
              EventKind.DISK_CREATED: "cyan", EventKind.HINT: "magenta"}.get(event.kind, "")
    message = escape_markup(event.message)
    text = f"[{colour}]{message}[/{colour}]" if colour else message
    return f"[dim]{template}[/dim] {text}"


async def _watch(store: Store, runner: JobRunner | None, ids: list[str]) -> None:
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bot.store.events import follow

    templates = {i: store.get(i).template for i in ids}
    firsts = [events[0].id for i in ids if (events := store.events(i))]
    after = min(firsts) - 1 if firsts else 0  # this run's events, from creation on
    stop = asyncio.Event()
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[status]}"),
                        TimeElapsedColumn(), console=out(), transient=False)
    bars = {i: progress.add_task(templates[i], total=100, status="queued") for i in ids}

    changed = asyncio.Event()

    async def refresh() -> None:
        while not stop.is_set():
            changed.clear()
            tasks = await asyncio.to_thread(lambda: [store.get(i) for i in ids])
            for t in tasks:
                progress.update(bars[t.id], completed=t.progress,
                                status=f"{states.LABELS[t.status]} · {t.stage}")
            if all(t.finished for t in tasks):
                stop.set()  # the follower still prints what was written before
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.2)

    async def print_events() -> None:
        async for event in follow(store, task_ids=ids, after=after, stop=stop):
            changed.set()
            if event.kind != EventKind.PROGRESS:
                progress.console.print(_event_line(event, templates[event.task_id]),
                                       soft_wrap=True)

    with progress:
        work = [refresh(), print_events()]
        if runner is not None:
            work.append(runner.run(only=ids, stop=stop))
        await asyncio.gather(*work)


#: What happens next to a task this process stopped working on, by its state.
_AFTER_DETACH = {
    states.QUEUED: "not started yet",
    states.COMPOSITING: "stopped while compositing; the next runner composites it again",
    states.UPLOADING: "stopped while uploading; the next runner removes any partial upload "
                      "and carries on",
    states.ACTION_REQUIRED: "published, waiting for the guest to run its scripts and power "
                            "off; the next runner goes on watching",
}


def detach_lines(tasks: list[Task]) -> list[str]:
    """What to print after Ctrl-C detached ``layerbot publish``: each task with its state
    and what becomes of it, true whatever state each one had reached."""
    lines = ["Detached: this command stopped following the tasks."]
    for t in tasks:
        after = _AFTER_DETACH.get(t.status, "finished")
        lines.append(f"  {t.id} {t.template}: {states.LABELS[t.status]} ({after})")
    active = [t for t in tasks if not t.finished]
    if active:
        them = "it" if len(active) == 1 else "them"
        lines.append(f"Another runner (layerbot worker, or layerbot serve) carries {them} on; "
                     f"until one runs, nothing happens. Follow with: layerbot task "
                     f"{active[0].id}; stop with: layerbot cancel {active[0].id}")
    return lines


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--no-run", is_flag=True, help="only queue the tasks for another runner")
@pass_ctx
def publish(ctx: Context, names: tuple[str, ...], yes: bool, no_run: bool) -> None:
    """Publish layered images from templates and follow the tasks to Done.

    Example: layerbot publish win10-office --yes
    """
    import asyncio
    import getpass

    from bot.runner.job_runner import JobRunner
    from bot.runner.planning import PlanError, enqueue, plan

    catalog = ctx.catalog()
    try:
        plans = [plan(catalog, n) for n in dict.fromkeys(names)]
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    from bot.messages import CONFIRM_TITLE

    count = f"{len(plans)} layered image" + ("s" if len(plans) != 1 else "")
    out().print(f"[bold]{CONFIRM_TITLE}[/bold]: {count}")
    for p in plans:
        _print_plan(p)
    if not yes and not click.confirm("Publish Layered Images?", default=True):
        out().print("Cancelled; nothing was queued.")
        return
    store = ctx.store()
    user = getpass.getuser()
    ids = [enqueue(store, p, requested_by=user)[0].id for p in plans]
    out().print("Queued: " + ", ".join(ids))
    if no_run:
        return
    runner = JobRunner(store, catalog)
    try:
        asyncio.run(_watch(store, runner, ids))
    except KeyboardInterrupt:
        for line in detach_lines([store.get(i) for i in ids]):
            out().print(line, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    finished = [store.get(i) for i in ids]
    sys.exit(0 if all(t.status == states.DONE for t in finished) else EXIT_FAILED)


# ------------------------------------------------------------------ listings
@main.command()
@pass_ctx
def templates(ctx: Context) -> None:
    """List the templates of the catalog.

    Example: layerbot templates
    """
    from rich.table import Table

    catalog = ctx.catalog()
    table = Table("template", "description", "layers", "connector", "disk")
    for name, t in catalog.templates.items():
        layers = ", ".join(n for n, _ in catalog.layers_of(t))
        table.add_row(name, t.description, layers, t.connector,
                      f"{t.disk.size_gib} GiB {t.disk.filesystem}")
    out().print(table)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


@main.command()
@click.option("--status", type=click.Choice(states.ALL), help="only tasks in this state")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def tasks(ctx: Context, status: str | None, limit: int) -> None:
    """List tasks, newest first.

    Example: layerbot tasks --status failed
    """
    from rich.table import Table

    table = Table("id", "template", "platform", "status", "stage", "progress", "created (UTC)",
                  "link / error")
    for t in ctx.store().list_tasks(status=status, limit=limit):
        table.add_row(t.id, t.template, t.platform, states.LABELS[t.status], t.stage,
                      f"{t.progress:.0f}%", _when(t.created_at), escape_markup(t.error or t.link or ""))
    out().print(table)


@main.command()
@click.argument("task_id")
@pass_ctx
def task(ctx: Context, task_id: str) -> None:
    """Show one task and its events.

    Example: layerbot task t1a2b3c4d
    """
    store = ctx.store()
    t = ctx.task(store, task_id)
    out().print(f"[bold]{t.id}[/bold] {t.template} → {t.connector} ({t.platform}): "
                  f"{states.LABELS[t.status]}, {t.stage} {t.progress:.0f}%")
    if t.link:
        out().print(f"link: {escape_markup(t.link)}")
    if t.error:
        out().print(f"[red]error:[/red] {escape_markup(t.error)}")
    for e in store.events(task_id):
        out().print(f"{_when(e.at)}  {e.kind:<16} {escape_markup(e.message)}", soft_wrap=True)


@main.command()
@click.argument("task_id")
@pass_ctx
def cancel(ctx: Context, task_id: str) -> None:
    """Cancel a task; its runner removes any partial upload.

    Example: layerbot cancel t1a2b3c4d
    """
    import getpass

    store = ctx.store()
    user = getpass.getuser()
    t = store.request_cancel(ctx.task(store, task_id).id, user, f"Cancel requested by {user}")
    out().print(f"{t.id}: {states.LABELS[t.status]}"
                  + ("" if t.finished else " (cancel requested; its runner cleans up)"))


def _runner_tags(value: str | None) -> list[str]:
    """``--tags a,b`` as a list; UsageError naming a tag that is not valid."""
    from adapters.base import check_runner_tag

    tags = [t.strip() for t in (value or "").split(",") if t.strip()]
    try:
        return [check_runner_tag(t) for t in tags]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tags") from None


@main.command()
@click.option("--tags", metavar="A,B", help="this worker's runner tags: it takes the tasks of connectors "
              "whose runner_tags are all among them (and of untagged connectors); without "
              "--tags, only untagged connectors' tasks")
@click.option("--slots", type=click.IntRange(1, 64), default=None,
              help="tasks compositing/uploading at once (default: runner.max_parallel)")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="serve /metrics, /healthz and /readyz on this port (0: a free one, printed)")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="address --metrics-port listens on")
@pass_ctx
def worker(ctx: Context, tags: str | None, slots: int | None, metrics_port: int | None,
           metrics_host: str) -> None:
    """Run a job runner (no Slack) until interrupted.

    Example: layerbot worker --tags dc-east --slots 2 --metrics-port 9464
    """
    import asyncio

    from bot.runner.job_runner import JobRunner
    from bot.store.backends import shown

    runner_tags = _runner_tags(tags)
    catalog = ctx.catalog()
    store = ctx.store()
    runner = JobRunner(store, catalog, max_parallel=slots, tags=runner_tags)
    takes = f"tags {', '.join(sorted(runner.tags))} or none" if runner.tags else "untagged connectors only"

    async def work() -> None:
        # SIGTERM (systemd, docker stop, kill) is a clean stop like Ctrl-C: the jobs detach
        # and their tasks are released without counting an attempt
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, lambda: (stop.set(), runner.wake()))
        async with contextlib.AsyncExitStack() as serving:
            if metrics_port is not None:
                from bot.metrics.http import ops_endpoints

                try:
                    bound = await serving.enter_async_context(
                        ops_endpoints(store, catalog, runner, metrics_host, metrics_port))
                except OSError as exc:
                    why = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise click.BadParameter(f"cannot listen on {metrics_host}:{metrics_port}: {why}",
                                             param_hint="--metrics-port") from None
                out().print(f"metrics: http://{metrics_host}:{bound}/metrics (also /healthz, /readyz)",
                            soft_wrap=True)
            # printed once both signals stop it cleanly: supervisors and tests may wait for it
            out().print(f"runner {runner.owner}: working tasks from {shown(ctx.db_location)} "
                        f"(max {runner.max_parallel} at once; {takes}); Ctrl-C to stop", soft_wrap=True)
            await runner.run(stop=stop)

    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the handlers are in place
        asyncio.run(work())
    out().print("stopped; unfinished tasks are left for another runner")


def _check_tar_layers(catalog: Catalog) -> list[str]:
    """Every member header of every tar layer (a plain tar: seeks; a compressed one is read
    through, but only as far as the largest disk of a template using it holds), then each
    template's tar layers together against its disk. Problems as "key path: message"."""
    from compositor import CompositorError, DiskTooSmallError
    from compositor.budget import SpaceBudget
    from compositor.tarlayer import check_archive

    def disk_budget(template: Template) -> SpaceBudget:
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


# ------------------------------------------------------------------ check
@main.command()
@pass_ctx
def check(ctx: Context) -> None:
    """Validate the catalog and check the tools the compositor needs.

    Example: layerbot --config layerbot.yml check
    """
    import adapters
    import compositor
    from bot.runner.planning import PlanError, plan

    catalog = ctx.catalog()
    unusable = 0
    for name, connector in catalog.connectors.items():
        if (problem := adapters.missing_sdk(connector.type)) is not None:
            out().print(f"[red]error:[/red] {ctx.config_path.name}: connectors.{name}.type: "
                        f"{escape_markup(problem)}", soft_wrap=True)
            unusable += 1
    if unusable:
        sys.exit(EXIT_USAGE)
    if problems := _check_tar_layers(catalog):
        for problem in problems:
            out().print(f"[red]error:[/red] {ctx.config_path.name}: {escape_markup(problem)}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    out().print(f"{ctx.config_path}: {len(catalog.layers)} layers, "
                  f"{len(catalog.connectors)} connectors, {len(catalog.templates)} templates: ok")
    plans = []
    for name in catalog.templates:
        try:
            plans.append(plan(catalog, name, check_cache=False))
        except PlanError as exc:
            out().print(f"[red]error:[/red] templates.{name}: {escape_markup(str(exc))}", soft_wrap=True)
    if len(plans) < len(catalog.templates):
        sys.exit(EXIT_USAGE)
    formats = sorted({p.disk_format for p in plans})
    filesystems = sorted({p.filesystem for p in plans} | {"ext4"})
    missing = []
    for tool in compositor.required_tools(formats, filesystems):
        out().print(f"  {tool.name:<14} {tool.path or '[red]missing[/red]'}")
        if not tool.path:
            missing.append(tool.package)
    if missing:
        pkgs = " ".join(sorted(set(missing)))
        out().print(f"[red]missing tools[/red]: install with: sudo apt-get install -y {pkgs}")
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--prune", is_flag=True,
              help="remove least recently used entries down to runner.cache_max_gib now")
@click.option("--max-gib", type=click.FloatRange(min=0), default=None,
              help="with --prune: this limit instead of the configured one (0 empties the "
                   "cache of everything not in use)")
@pass_ctx
def cache(ctx: Context, prune: bool, max_gib: float | None) -> None:
    """Show the composited-disk cache (least recently used first), or prune it.

    Example: layerbot cache --prune --max-gib 20
    """
    from rich.table import Table

    from bot.messages import human_bytes
    from compositor import cache_usage, evict_cache

    settings = ctx.catalog().runner
    limit = max_gib if max_gib is not None else settings.cache_max_gib
    if max_gib is not None and not prune:
        raise click.UsageError("--max-gib goes with --prune")
    if prune:
        min_free = settings.cache_min_free_gib
        if limit is None and not min_free:
            raise click.UsageError("runner.cache_max_gib is null (no limit): give --max-gib")
        result = evict_cache(settings.cache_dir, None if limit is None else int(limit * (1 << 30)),
                             min_free_bytes=int(min_free * (1 << 30)))
        count = len(result.removed)
        out().print(f"removed {count} {'entry' if count == 1 else 'entries'} "
                      f"({human_bytes(result.freed)}); "
                      f"{human_bytes(result.left)} left"
                      + (f", {result.busy} in use or used in the last 5 minutes kept"
                         if result.busy else ""))
        return
    usage = cache_usage(settings.cache_dir)
    table = Table("entry", "kind", "size", "last used")
    for entry in usage.entries:
        table.add_row(entry.key[:12], entry.kind, human_bytes(entry.size), _when(entry.used))
    out().print(table)
    bound = (f"limit {limit:g} GiB" if limit is not None else "no limit") + (
        f", keeping {settings.cache_min_free_gib:g} GiB free" if settings.cache_min_free_gib
        else "")
    out().print(f"{settings.cache_dir}: {human_bytes(usage.total)} on disk ({bound})")



if __name__ == "__main__":
    main()
