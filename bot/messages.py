"""Every user-facing sentence of layerbot, shared by the CLI and Slack."""

from __future__ import annotations

TASK_TITLE = "Publishing Layered Image"

LOCAL_USER_HINT = (
    "If you see \u201cThis system was not shut down properly. Please log off immediately "
    "and contact your system administrator.\u201d, log in with a local user, not a domain user."
)


def task_created(template: str, requester: str) -> str:
    return f"{TASK_TITLE} \u00b7 {template} queued by {requester}"


def stage_compositing(n_layers: int) -> str:
    return f"Compositing {n_layers} layers"


def cache_hit(key: str) -> str:
    return f"cache hit: reusing composited disk {key[:12]}"


def composited(size_bytes: int, fmt: str, seconds: float) -> str:
    return f"Composited disk: {human_bytes(size_bytes)} {fmt} in {seconds:.1f} s"


def stage_uploading(platform: str) -> str:
    return f"Uploading to {platform}"


def disk_created(summary: str, link: str) -> str:
    return f"Disk created: {summary} \u2014 {link}"


def waiting_for_shutdown() -> str:
    return "Waiting for the guest to run its scripts and shut down"


def done(elapsed: float) -> str:
    return f"Done in {human_duration(elapsed)}"


def failed(reason: str, removed: list[str]) -> str:
    cleaned = "; cleaned up: " + ", ".join(removed) if removed else ""
    return f"Failed: {reason}{cleaned}"


def cancelled(removed: list[str]) -> str:
    cleaned = "; cleaned up: " + ", ".join(removed) if removed else ""
    return f"Cancelled{cleaned}"


def resumed_cleanup(removed: list[str]) -> str:
    return "Removed partial upload of the previous attempt: " + ", ".join(removed)


def image_name(template: str, stamp: str) -> str:
    return f"{template}-{stamp}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(elapsed: float) -> str:
    seconds = round(elapsed)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
