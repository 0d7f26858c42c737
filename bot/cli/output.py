"""What every ``layerbot`` command prints through: the console, markup escaping, exit codes."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported on first use: `--help` stays fast
    from rich.console import Console

EXIT_FAILED = 1
EXIT_USAGE = 2


def escape_markup(text: str) -> str:
    """Messages contain brackets (``[a-z0-9]``, ``layerbot[vsphere]``) rich would take as tags."""
    from rich.markup import escape

    return escape(text)


@functools.cache
def out() -> Console:
    """The console every command prints to."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not cut task ids and links at 80 columns
        console.width = 200
    return console
