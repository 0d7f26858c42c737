"""``python -m tests.faults.chaos_worker PLATFORM LAYERBOT-ARGS...``: the layerbot CLI with the
platform's short polls and retries (what the in-process tests hand JobRunner as ``clients``),
so a chaos run's watch and task polls take milliseconds rather than the production seconds."""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

from bot.cli.commands import main
from bot.runner.job_runner import JobRunner

#: connector type -> "module:NAME" of its fast clients
FAST_CLIENTS = {
    "nutanix": "tests.nutanix.conftest:FAST",
    "xenserver": "tests.xenserver.conftest:short_clients",
    "gcp": "tests.gcp.compute_fixtures:clients",
    "vsphere": "tests.vsphere.clients:short_clients",
    # the PowerShell double the test serves (tests/windows_remote/served_double.py)
    "hyperv": "tests.hyperv.conftest:served_clients",
    "pvs": "tests.pvs.conftest:served_clients",
}


def fast_clients(platform: str) -> object:
    """The clients object (or what a factory of them makes)."""
    module, name = FAST_CLIENTS[platform].split(":")
    found = getattr(importlib.import_module(module), name)
    return found() if callable(found) else found


def install(platform: str) -> None:
    """Every JobRunner the CLI makes gets the platform's fast clients."""
    clients = fast_clients(platform)
    original = JobRunner.__init__

    @functools.wraps(original)
    def init(self: JobRunner, *args: Any, **kwargs: Any) -> None:
        kwargs["clients"] = {platform: clients, **(kwargs.get("clients") or {})}
        original(self, *args, **kwargs)

    JobRunner.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["layerbot", *sys.argv[2:]]
    sys.exit(main())
