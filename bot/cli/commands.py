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

from bot.cli import credentials, log_setup
from bot.cli.completion import complete_task_ids, complete_template_names
from bot.cli.json_output import JSON_HELP, emit, missing_tools_command
from bot.cli.output import EXIT_FAILED, EXIT_USAGE, escape_markup, out
from bot.store import states
from bot.store.states import EventKind

if TYPE_CHECKING:  # the commands import these when they run: `--help` stays fast
    from bot.catalog import Catalog
    from bot.runner.job_runner import JobRunner
    from bot.runner.planning import PublishPlan
    from bot.store.interface import Store
    from bot.store.model import Event, Task

#: the audit trail's reason for what a local user did on the command line
CLI_REASON = "command line"


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

    def catalog(self, *, json_on_stdout: bool = False) -> Catalog:
        """The catalog, or exit 2 printing every problem (on stderr when stdout is for JSON)."""
        from bot.catalog import CatalogError, load_catalog

        try:
            return load_catalog(self.config_path)
        except CatalogError as exc:
            for problem in exc.problems:
                if json_on_stdout:
                    click.echo(f"error: {problem}", err=True)
                else:
                    out().print(f"[red]error:[/red] {escape_markup(problem)}", soft_wrap=True)
            sys.exit(EXIT_USAGE)

    def service_catalog(self) -> Catalog:
        """The catalog of a long-running service (serve, worker): also exit 2 when a folder
        the runner writes to is not writable, before any task is taken."""
        from bot.runner_dirs import unwritable_dirs

        catalog = self.catalog()
        if problems := unwritable_dirs(catalog.runner):
            for problem in problems:
                click.echo(f"error: {self.config_path.name}: {problem}", err=True)
            sys.exit(EXIT_USAGE)
        return catalog

    def store(self, *, must_exist: bool = False) -> Store:
        """``must_exist``: for a command that only reads tasks (or needs one), a missing SQLite
        file exits 2 saying so, on stderr, instead of creating an empty database."""
        from bot.store.backends import NoDatabase, open_store
        from bot.store.model import StoreError

        try:
            return open_store(self.db_location, must_exist=must_exist)
        except NoDatabase as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except StoreError as exc:
            raise click.UsageError(str(exc)) from None

    def task(self, store: Store, task_id: str) -> Task:
        from bot.store.task_store import TaskNotFound

        try:
            return store.get(task_id)
        except TaskNotFound as exc:
            raise click.UsageError(str(exc)) from None


pass_ctx = click.make_pass_decorator(Context)


#: the root options that may also follow the sub-command (``layerbot templates --log-level debug``)
_LOG_OPTIONS = ("--log-level", "--log-format")


def hoist_log_options(args: list[str]) -> list[str]:
    """``args`` with every --log-level/--log-format (and its value) moved to the front, where
    the root group parses them, so they work on every command, lazy ones included; nothing
    after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in _LOG_OPTIONS and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        (front if arg.partition("=")[0] in _LOG_OPTIONS else rest).append(arg)
        i += 1
    return front + rest


class LazyGroup(click.Group):
    """Commands whose modules load only when they run: the Slack stack for ``serve``, the qemu
    target's ``vm``. ``layerbot --help`` lists them from their summaries here, so it imports
    neither; they import nothing of this module but its output helpers (no import circle)."""

    #: name -> ("module:attribute", the summary ``--help`` shows; a test keeps it the command's)
    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "serve": ("bot.slack.serve:serve", "Run the Slack app, the job runner and the Slack notifier."),
        "vm": ("adapters.qemu.vm_cli:vm", "The VMs of tasks published to a QEMU target."),
        "db": ("bot.cli.db:db", "Upgrade the task database's schema, copy a SQLite one to PostgreSQL, "
                         "or back it up."),
        "audit": ("bot.cli.audit:audit", "Show the audit trail: who asked, confirmed, cancelled, retried, "
                  "and what was refused."),
        "completion": ("bot.cli.completion:completion",
                       "Print the shell completion script for bash, zsh or fish."),
        "schema": ("bot.cli.schema:schema", "Print the JSON Schema of layerbot.yml."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_log_options(args))

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
@click.version_option(package_name="layerbot", prog_name="layerbot")
@click.option("--config", type=click.Path(path_type=Path), help="layerbot.yml "
              "(default: $LAYERBOT_CONFIG, else ./layerbot.yml)")
@click.option("--db", help="task database: a SQLite file or a postgresql://user@host/db URL, its "
              "password in PGPASSWORD or ~/.pgpass (default: $LAYERBOT_DB, else ./layerbot.db)")
@click.option("--log-level", type=click.Choice(list(log_setup.LEVELS), case_sensitive=False),
              envvar="LAYERBOT_LOG_LEVEL", show_envvar=True,
              help="log records of this level and above to stderr (default: info for serve and "
                   "worker, warning for the other commands)")
@click.option("--log-format", type=click.Choice(["text", "json"], case_sensitive=False), default="text",
              envvar="LAYERBOT_LOG_FORMAT", show_envvar=True, show_default=True,
              help="json: one JSON object a line (ts, level, logger, message, exc, task_id, "
                   "template, connector)")
@click.option("-v", "--verbose", is_flag=True, help="the same as --log-level debug")
@click.pass_context
def main(ctx: click.Context, config: Path | None, db: str | None, log_level: str | None,
         log_format: log_setup.LogFormat, verbose: bool) -> None:
    """layerbot: publish layered images from templates.

    Example: layerbot --config examples/demo/layerbot.yml publish demo-office --yes
    """
    log_setup.configure(_log_level(ctx, log_level, verbose), log_format)
    ctx.obj = Context(config, db)
    try:
        credentials.load_credentials()  # before any command reads a secret from the environment
    except credentials.CredentialError as exc:
        raise click.UsageError(str(exc)) from None


#: the long-running services log what they do; a one-shot command only what went wrong
_SERVICES = ("serve", "worker")


def _log_level(ctx: click.Context, log_level: str | None, verbose: bool) -> int:
    """-v, else --log-level (or $LAYERBOT_LOG_LEVEL), else the sub-command's default."""
    from click.core import ParameterSource

    given_here = ctx.get_parameter_source("log_level") is ParameterSource.COMMANDLINE
    if verbose and given_here and log_level and log_level.lower() != "debug":
        raise click.UsageError(f"-v means --log-level debug, not also --log-level {log_level}")
    if verbose:
        return log_setup.LEVELS["debug"]
    if log_level:
        return log_setup.LEVELS[log_level.lower()]
    return log_setup.LEVELS["info" if ctx.invoked_subcommand in _SERVICES else "warning"]


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
@click.argument("names", nargs=-1, required=True, shell_complete=complete_template_names)
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
    user = getpass.getuser()
    target = ",".join(p.template for p in plans)
    if not yes and not click.confirm("Publish Layered Images?", default=True):
        ctx.store().audit(user, "dismiss", target, True, CLI_REASON)
        out().print("Cancelled; nothing was queued.")
        return
    store = ctx.store()
    store.audit(user, "confirm", target, True, CLI_REASON + (" (--yes)" if yes else ""))
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
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def templates(ctx: Context, as_json: bool) -> None:
    """List the templates of the catalog.

    Example: layerbot templates
    """
    from rich.table import Table

    catalog = ctx.catalog(json_on_stdout=as_json)
    if as_json:
        from bot.cli.json_output import template_records

        emit(template_records(catalog))
        return
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
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def tasks(ctx: Context, status: str | None, limit: int, as_json: bool) -> None:
    """List tasks, newest first.

    Example: layerbot tasks --status failed
    """
    from rich.table import Table

    if as_json:
        from bot.cli.json_output import task_record

        emit([task_record(t) for t in ctx.store(must_exist=True).list_tasks(status=status, limit=limit)])
        return
    table = Table("id", "template", "platform", "status", "stage", "progress", "created (UTC)",
                  "link / error")
    for t in ctx.store(must_exist=True).list_tasks(status=status, limit=limit):
        table.add_row(t.id, t.template, t.platform, states.LABELS[t.status], t.stage,
                      f"{t.progress:.0f}%", _when(t.created_at), escape_markup(t.error or t.link or ""))
    out().print(table)


@main.command()
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def task(ctx: Context, task_id: str, as_json: bool) -> None:
    """Show one task and its events.

    Example: layerbot task t1a2b3c4d
    """
    store = ctx.store(must_exist=True)
    t = ctx.task(store, task_id)
    if as_json:
        from bot.cli.json_output import task_with_events

        emit(task_with_events(t, store.events(t.id)))
        return
    out().print(f"[bold]{t.id}[/bold] {t.template} → {t.connector} ({t.platform}): "
                  f"{states.LABELS[t.status]}, {t.stage} {t.progress:.0f}%")
    if t.link:
        out().print(f"link: {escape_markup(t.link)}")
    if t.error:
        out().print(f"[red]error:[/red] {escape_markup(t.error)}")
    for e in store.events(task_id):
        out().print(f"{_when(e.at)}  {e.kind:<16} {escape_markup(e.message)}", soft_wrap=True)


@main.command()
@click.argument("task_id", shell_complete=complete_task_ids)
@pass_ctx
def cancel(ctx: Context, task_id: str) -> None:
    """Cancel a task; its runner removes any partial upload.

    Example: layerbot cancel t1a2b3c4d
    """
    import getpass

    store = ctx.store(must_exist=True)
    user = getpass.getuser()
    before = ctx.task(store, task_id)
    reason = f"the task is {states.LABELS[before.status].lower()}" if before.finished else CLI_REASON
    store.audit(user, "cancel", before.id, not before.finished, reason)
    t = store.request_cancel(before.id, user, f"Cancel requested by {user}")
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
    catalog = ctx.service_catalog()
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
                from bot.metrics.http import ops_endpoints, ops_url

                try:
                    bound = await serving.enter_async_context(
                        ops_endpoints(store, catalog, runner, metrics_host, metrics_port))
                except OSError as exc:
                    why = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise click.BadParameter(f"cannot listen on {metrics_host}:{metrics_port}: {why}",
                                             param_hint="--metrics-port") from None
                log_setup.announce(f"metrics: {ops_url(metrics_host, bound)} (also /healthz, /readyz)")
            # printed once both signals stop it cleanly: supervisors and tests may wait for it
            log_setup.announce(f"runner {runner.owner}: working tasks from {shown(ctx.db_location)} "
                               f"(max {runner.max_parallel} at once; {takes}); Ctrl-C to stop")
            await runner.run(stop=stop)

    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the handlers are in place
        asyncio.run(work())
    log_setup.announce("stopped; unfinished tasks are left for another runner")


# ------------------------------------------------------------------ check
@main.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def check(ctx: Context, as_json: bool) -> None:
    """Validate the catalog and check the tools the compositor needs.

    Example: layerbot --config layerbot.yml check
    """
    from bot.cli.check_report import CheckReport, Problem, run_checks

    if as_json:
        from bot.catalog import CatalogError, load_catalog

        try:
            report = run_checks(ctx.config_path, load_catalog(ctx.config_path))
        except CatalogError as exc:
            report = CheckReport(ctx.config_path, problems=[Problem("catalog", p) for p in exc.problems])
        emit(report.as_json())
        sys.exit(0 if report.ok else EXIT_USAGE)
    catalog = ctx.catalog()
    report = run_checks(ctx.config_path, catalog)
    for stages in (("runner_dir", "connector_sdk", "tar_layer"), ("plan",)):
        if stages == ("plan",):
            out().print(f"{ctx.config_path}: {len(catalog.layers)} layers, "
                        f"{len(catalog.connectors)} connectors, {len(catalog.templates)} templates: ok")
        if problems := report.problems_of(*stages):
            for problem in problems:
                out().print(f"[red]error:[/red] {escape_markup(problem)}", soft_wrap=True)
            sys.exit(EXIT_USAGE)
    for tool in report.tools:
        out().print(f"  {tool.name:<14} {tool.path or '[red]missing[/red]'}")
    if missing := report.missing_packages:
        out().print(f"[red]missing tools[/red]: install with: {missing_tools_command(missing)}")
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--prune", is_flag=True,
              help="remove least recently used entries down to runner.cache_max_gib now")
@click.option("--max-gib", type=click.FloatRange(min=0), default=None,
              help="with --prune: this limit instead of the configured one (0 empties the "
                   "cache of everything not in use)")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def cache(ctx: Context, prune: bool, max_gib: float | None, as_json: bool) -> None:
    """Show the composited-disk cache (least recently used first), or prune it.

    Example: layerbot cache --prune --max-gib 20
    """
    from rich.table import Table

    from bot.messages import human_bytes
    from compositor import cache_usage, evict_cache

    settings = ctx.catalog(json_on_stdout=as_json).runner
    limit = max_gib if max_gib is not None else settings.cache_max_gib
    if max_gib is not None and not prune:
        raise click.UsageError("--max-gib goes with --prune")
    if prune:
        min_free = settings.cache_min_free_gib
        if limit is None and not min_free:
            raise click.UsageError("runner.cache_max_gib is null (no limit): give --max-gib")
        result = evict_cache(settings.cache_dir, None if limit is None else int(limit * (1 << 30)),
                             min_free_bytes=int(min_free * (1 << 30)))
        if as_json:
            from bot.cli.json_output import prune_record

            emit(prune_record(str(settings.cache_dir), result))
            return
        count = len(result.removed)
        out().print(f"removed {count} {'entry' if count == 1 else 'entries'} "
                      f"({human_bytes(result.freed)}); "
                      f"{human_bytes(result.left)} left"
                      + (f", {result.busy} in use or used in the last 5 minutes kept"
                         if result.busy else ""))
        return
    usage = cache_usage(settings.cache_dir)
    if as_json:
        from bot.cli.json_output import cache_record

        emit(cache_record(str(settings.cache_dir), usage, limit, settings.cache_min_free_gib))
        return
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
