"""Shell completion: ``layerbot completion bash|zsh|fish`` prints the script (click's
``_LAYERBOT_COMPLETE`` protocol), and the callbacks that complete template names and task ids.

The callbacks run on every Tab press, before any command: they read only the catalog's
``templates`` keys (no validation of layers or connectors) and the store's latest task ids,
and a broken catalog or an unreachable database completes nothing rather than printing a
traceback into the user's command line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
PROG = "layerbot"
COMPLETE_VAR = "_LAYERBOT_COMPLETE"
#: task ids offered: the most recent ones
RECENT_TASKS = 50

log = logging.getLogger(__name__)


def _root_option(ctx: click.Context, name: str) -> str | None:
    value = ctx.find_root().params.get(name)
    return None if value is None else str(value)


def complete_template_names(ctx: click.Context, param: click.Parameter,
                            incomplete: str) -> list[CompletionItem]:
    from bot.yamlfile import load_yaml

    config = _root_option(ctx, "config") or os.environ.get("LAYERBOT_CONFIG") or "layerbot.yml"
    try:
        data = load_yaml(Path(config)).data
        templates = data.get("templates") if isinstance(data, dict) else None
    except Exception as exc:  # anything at all: a Tab press must not print a traceback
        log.debug("no template names to complete from %s: %s", config, exc)
        return []
    if not isinstance(templates, dict):
        return []
    chosen = set(ctx.params.get(param.name or "") or ())
    return [CompletionItem(name, help=str(settings.get("description") or "")
                           if isinstance(settings, dict) else None)
            for name, settings in templates.items()
            if isinstance(name, str) and name.startswith(incomplete) and name not in chosen]


#: seconds a Tab press waits for PostgreSQL before it completes nothing
COMPLETION_CONNECT_TIMEOUT = 2


def complete_task_ids(ctx: click.Context, param: click.Parameter,
                      incomplete: str) -> list[CompletionItem]:
    from bot.store.backends import default_db_location, open_store

    location = default_db_location(_root_option(ctx, "db"))
    try:
        store = open_store(location, migrate=False, must_exist=True,
                           connect_timeout=COMPLETION_CONNECT_TIMEOUT)
        try:
            recent = store.list_tasks(limit=RECENT_TASKS)
        finally:
            store.close()
    except Exception as exc:  # anything at all: a Tab press must not print a traceback
        log.debug("no task ids to complete: %s", exc)
        return []
    return [CompletionItem(t.id, help=f"{t.template}: {t.status}")
            for t in recent if t.id.startswith(incomplete)]


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    It completes commands, options, template names (publish) and task ids (task, cancel).

    Example: layerbot completion bash > ~/.local/share/bash-completion/completions/layerbot
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # click.Choice admitted only the shells click has
    click.echo(completion_class(root.command, {}, PROG, COMPLETE_VAR).source())
