"""The runner's folders: defaults under systemd's folders, and a check that they are writable.

Under ``ProtectSystem=strict`` the catalog's folder (``/etc/layerbot``) is read-only, so the
defaults next to it (``.layerbot/cache``, ``.layerbot/work``) cannot be written; a unit's
``CacheDirectory=`` and ``StateDirectory=`` are, and systemd names them in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.catalog import RunnerSettings

#: runner key -> (systemd's variable, the folder under it)
SYSTEMD_DEFAULTS = {"cache_dir": ("CACHE_DIRECTORY", "cache"), "work_dir": ("STATE_DIRECTORY", "work")}


def with_systemd_defaults(runner: Any, environ: Mapping[str, str] = os.environ) -> Any:
    """The catalog's ``runner`` section with ``cache_dir``/``work_dir`` under systemd's
    folders when it does not set them and systemd does (its first folder when it lists several)."""
    if runner is None:
        runner = {}
    if not isinstance(runner, dict):
        return runner  # the loader names what is wrong with it
    added = dict(runner)
    for key, (variable, folder) in SYSTEMD_DEFAULTS.items():
        first = environ.get(variable, "").split(":")[0]
        if key not in added and first:
            added[key] = str(Path(first) / folder)
    return added


def _not_writable(path: Path) -> str | None:
    """Why the runner could not write to ``path`` (nor create it, when it is missing), None
    when it could; creates nothing (``layerbot check`` only looks)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        return f"{existing} is not a folder"
    if existing == path and not path.is_dir():
        return "not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        # access() also answers EROFS for a read-only mount (ProtectSystem=strict)
        return "read-only" if existing == path else f"cannot create it in {existing} (read-only)"
    return None


def unwritable_dirs(runner: RunnerSettings) -> list[str]:
    """One problem ("runner.KEY: PATH is not writable: why") per folder the runner writes to
    that it cannot write to."""
    dirs = {"runner.work_dir": runner.work_dir, "runner.cache_dir": runner.cache_dir}
    if runner.ram_scratch and runner.ram_scratch_dir is not None:
        dirs["runner.ram_scratch_dir"] = runner.ram_scratch_dir
    return [f"{key}: {path} is not writable: {why}" for key, path in dirs.items()
            if (why := _not_writable(path)) is not None]
