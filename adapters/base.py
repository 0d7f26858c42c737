"""The one interface every platform adapter implements.

An adapter knows nothing of Slack or of the task store. The runner hands it a
:class:`PublishContext` (the finished artifact, a progress callback and a way to
persist handles of what it creates) and gets back a :class:`Published` handle,
which is JSON-serialisable so a restarted runner can resume watching or clean up.

Flow for one task::

    adapter = registry.create(connector_config)
    published = await adapter.publish(ctx)          # upload + create the VM/image
    text = adapter.next_steps(published)            # the platform's "what to do next"
    if Capability.WATCH_POWER in adapter.capabilities:
        await adapter.wait_for_shutdown(published, ctx)   # guest ran scripts, powered off
    ...on failure or cancel at any point:
    removed = await adapter.cleanup(ctx.resources)
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DiskFormat = Literal["raw", "qcow2", "vmdk", "vhd", "vhdx", "gce-tar"]


class Capability(enum.Flag):
    NONE = 0
    #: The adapter can tell when the guest has run its scripts and powered off.
    WATCH_POWER = enum.auto()
    #: Publishing leaves a VM (rather than an image/file) at the target.
    CREATES_VM = enum.auto()


# ---------------------------------------------------------------- errors
class AdapterError(Exception):
    """Base of every error an adapter raises; the message is shown to users as is."""

    retryable: ClassVar[bool] = False


class AuthError(AdapterError):
    """The platform rejected the credentials."""


class NotFoundError(AdapterError):
    """A named object (datacenter, datastore, folder, bucket, ...) does not exist."""


class InsufficientSpaceError(AdapterError):
    """The target storage cannot hold the disk."""


class PlatformTimeoutError(AdapterError):
    """The platform did not answer, or the guest did not shut down, in time."""

    retryable = True


class PlatformError(AdapterError):
    """Any other failure reported by the platform (its message is kept)."""


# ---------------------------------------------------------------- config
def _relative_to_catalog(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


#: A path in layerbot.yml, resolved against the catalog file's directory.
CatalogPath = Annotated[Path, AfterValidator(_relative_to_catalog)]


def _existing_file(value: Path) -> Path:
    if value.is_dir():
        raise ValueError(f"{str(value)!r} is a directory, not a file")
    if not value.exists():
        raise ValueError(f"file {str(value)!r} does not exist")
    if not value.is_file():
        raise ValueError(f"{str(value)!r} is not a regular file")
    return value


#: A file named in layerbot.yml that must exist.
CatalogFile = Annotated[CatalogPath, AfterValidator(_existing_file)]


class AccessConfig(BaseModel):
    """Who may publish to a connector or template (enforced by the Slack app)."""

    model_config = ConfigDict(extra="forbid")
    users: list[str] = Field(default_factory=list)
    user_groups: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    approval: Literal["none", "second_person"] = "none"


class ConnectorConfig(BaseModel):
    """Settings shared by every connector type; each adapter module subclasses it."""

    model_config = ConfigDict(extra="forbid")
    #: The template filesystems (``disk.filesystem``) this target can use; None: any.
    filesystems: ClassVar[tuple[str, ...] | None] = None
    type: str
    #: Script files (paths relative to the catalog file) copied into the image
    #: and run by the guest on first boot, in this order.
    scripts: list[CatalogFile] = Field(default_factory=list)
    #: ``auto``: the first-boot runner powers the guest off after the scripts;
    #: ``manual``: an admin shuts it down.
    shutdown: Literal["auto", "manual"] = "auto"
    notify_channel: str | None = None
    access: AccessConfig | None = None

    @field_validator("scripts")
    @classmethod
    def _script_names_unique(cls, value: list[Path]) -> list[Path]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two scripts share the file name {dupes[0]!r}")
        return value


def secret_from_env(var: str) -> str:
    """Read a secret named by the config; the error names the variable, never a value."""
    value = os.environ.get(var)
    if not value:
        raise AuthError(f"environment variable {var} is not set")
    return value


# ---------------------------------------------------------------- runtime
class Backoff:
    """Sleeps for a polling watch that grow while nothing changes: hundreds of tasks may wait
    for their guests at once, for hours. ``reset()`` when something changed."""

    def __init__(self, first: float, longest: float, factor: float = 1.5) -> None:
        self.first = first
        self.longest = longest
        self.factor = factor
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.current)
        self.current = min(self.current * self.factor, self.longest)


ProgressFn = Callable[[float, str], Awaitable[None]]
RecordFn = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class PublishContext:
    """What the runner gives an adapter for one task."""

    task_id: str
    template: str
    #: Name for the VM/image at the target: template name + UTC timestamp.
    image_name: str
    artifact: Path
    artifact_format: DiskFormat
    virtual_size: int
    #: Report upload/watch progress: fraction 0..1 of the current stage and a note.
    progress: ProgressFn
    #: Persist handles of created objects *before* relying on them, so cleanup
    #: after a crash knows what exists. Merged into :attr:`resources`.
    record: RecordFn
    resources: dict[str, Any] = field(default_factory=dict)
    #: Seconds to wait for the guest to power off (adapters with WATCH_POWER).
    watch_timeout: float = 24 * 3600.0
    #: Where an adapter may put temporary files (None: the system's temp dir). Name them with
    #: ``compositor.sweep.owner_prefix(BUILD_PREFIX)`` so that a runner starting after this
    #: one was killed removes them (``sweep_stale``).
    scratch_dir: Path | None = None


@dataclass
class Published:
    """The result of a successful publish: where it is, and how to find it again."""

    #: URL of the VM or image (console deep link, file URL, ...).
    link: str
    #: One-line description, e.g. "VM win10-office-20261126-010101-3f9a (powered off)".
    summary: str
    #: JSON-serialisable handle for wait_for_shutdown / cleanup / resume.
    resource: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link, "summary": self.summary, "resource": self.resource}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Published:
        return cls(link=data["link"], summary=data["summary"], resource=dict(data["resource"]))


@runtime_checkable
class Adapter(Protocol):
    """A publishing target. Instances are created per connector by the registry."""

    #: Connector ``type`` in layerbot.yml, e.g. "vsphere".
    type_name: ClassVar[str]
    #: Human name of the platform, e.g. "VMware vSphere".
    platform: ClassVar[str]
    capabilities: ClassVar[Capability]

    def disk_format(self) -> DiskFormat:
        """The artifact format this target wants from the compositor."""
        ...

    async def publish(self, ctx: PublishContext) -> Published:
        """Upload the artifact and create the VM/image; report progress via ctx."""
        ...

    def next_steps(self, published: Published) -> str:
        """What the admin does next on this platform (the seed's wording)."""
        ...

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        """Return once the guest has run its scripts and powered off.

        Only called when ``Capability.WATCH_POWER`` is set. Raises
        PlatformTimeoutError after ``ctx.watch_timeout`` seconds.
        """
        ...

    async def cleanup(self, resources: dict[str, Any]) -> list[str]:
        """Remove partial work described by recorded resources.

        Idempotent (objects already gone are fine). Returns one line per object
        removed, for the failure message.
        """
        ...

    async def close(self) -> None:
        """Release sessions/connections."""
        ...
