"""``--json``: one JSON document on stdout per command, its field names stable and documented
(docs/cli.md; docs/cli-json.schema.json is what the tests validate the output against)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.store.model import Event, Task
    from compositor.evict import CacheEntry, CacheUsage, Eviction

JSON_HELP = "print one JSON document (fields: docs/cli.md) instead of a table"


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC (``2026-12-01T09:30:00Z``), None for none."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def emit(document: Any) -> None:
    """Print the document alone on stdout (no rich: no markup, no wrapping)."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def task_record(t: Task) -> dict[str, Any]:
    return {
        "id": t.id, "template": t.template, "connector": t.connector, "platform": t.platform,
        "status": t.status, "stage": t.stage, "progress": t.progress,
        "requested_by": t.requested_by, "image_name": t.image_name, "link": t.link,
        "error": t.error, "finished": t.finished, "attempts": t.attempts,
        "created_at": iso(t.created_at), "created_epoch": t.created_at,
        "updated_at": iso(t.updated_at), "updated_epoch": t.updated_at,
        "finished_at": iso(t.finished_at), "finished_epoch": t.finished_at,
    }


def event_record(e: Event) -> dict[str, Any]:
    return {"id": e.id, "at": iso(e.at), "at_epoch": e.at, "kind": str(e.kind), "message": e.message}


def task_with_events(t: Task, events: list[Event]) -> dict[str, Any]:
    return {**task_record(t), "events": [event_record(e) for e in events]}


def template_records(catalog: Catalog) -> list[dict[str, Any]]:
    return [{
        "name": name, "description": t.description,
        "os_layer": t.os_layer, "app_layers": list(t.app_layers), "platform_layer": t.platform_layer,
        "layers": [n for n, _ in catalog.layers_of(t)],
        "connector": t.connector, "connector_type": catalog.connectors[t.connector].type,
        "size_gib": t.disk.size_gib, "filesystem": t.disk.filesystem,
    } for name, t in catalog.templates.items()]


def _entry_record(entry: CacheEntry) -> dict[str, Any]:
    return {"key": entry.key, "kind": entry.kind, "size_bytes": entry.size,
            "last_used": iso(entry.used), "last_used_epoch": entry.used}


def cache_record(cache_dir: str, usage: CacheUsage, limit_gib: float | None,
                 min_free_gib: float) -> dict[str, Any]:
    return {"cache_dir": cache_dir, "total_bytes": usage.total, "limit_gib": limit_gib,
            "min_free_gib": min_free_gib, "entries": [_entry_record(e) for e in usage.entries]}


def prune_record(cache_dir: str, result: Eviction) -> dict[str, Any]:
    return {"cache_dir": cache_dir, "removed": [_entry_record(e) for e in result.removed],
            "freed_bytes": result.freed, "left_bytes": result.left, "busy": result.busy}


def missing_tools_command(packages: list[str]) -> str:
    return f"sudo apt-get install -y {' '.join(packages)}"
