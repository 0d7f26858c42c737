"""The one interface every platform adapter implements (contract version 2).

An adapter knows nothing of Slack or of the task store. A platform's publish is a list of
:class:`~adapters.steps.Step` objects (``adapter.steps(ctx)``), run by the same
:class:`~adapters.steps.StepRunner` as the task's own steps. Each step records a typed
:class:`~adapters.resources.Resource` (``await ctx.record(...)``) *before* relying on it, so
after a failure, a cancel or a crash the runner knows what exists; the last step sets
``ctx.published``. :class:`PlatformStep` gives every platform cleanup for free: on failure or
cancel the resources a step recorded are removed newest first (``PARTIAL`` and ``STAGING``),
after success only the ``STAGING`` ones (an upload that only fed an image), on a detach none.

Flow for one task::

    adapter = adapters.create(connector_config)
    try:
        published = await publish(adapter, ctx)        # StepRunner(adapter.steps(ctx))
        text = adapter.next_steps(published)
        if Capability.WATCH_POWER in adapter.capabilities:     # a Watcher
            await adapter.wait_for_shutdown(published, ctx)
    finally:
        await adapter.close()   # always (adapters.close_blocking from synchronous code)
    ...after a crash, from the recorded resources:
        await clean_up(adapter, ctx, Outcome.FAILED)            # idempotent, resumable

Capabilities are used: ``WATCH_POWER`` adapters implement :class:`Watcher` (the others define
no such method). They may differ per connector: ``Adapter(config)`` may construct a subclass
(a Provisioning connector with a ``hypervisor`` watches that connector's VM, adapters/pvs), and
the runner reads them from the instance. A connector that names another one declares it in
``ConnectorConfig.references()``; the catalog checks and links it at load.
``RESUMABLE_UPLOAD`` adapters implement :class:`ResumableUpload`, and a
runner that takes a task over keeps their recorded upload and continues it. Platform calls
that are safe to repeat go through :func:`adapters.retry.retrying` (``retryable`` errors,
back-off, Retry-After). ``Published.resource`` is a typed resource too. Old task rows hold
resources (and the published resource) as a dict: an adapter that wrote them reads them with
static ``legacy_resources(dict) -> list[Resource]`` and ``legacy_published(dict) -> Resource``.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import errno
import logging
import os
import re
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

from adapters.resources import Lifetime, R, Resource, ResourceError, load
from adapters.steps import Outcome, Step, StepRunner

log = logging.getLogger(__name__)

DiskFormat = Literal["raw", "qcow2", "vmdk", "vhd", "vhd-dynamic", "vhdx", "gce-tar"]


class Capability(enum.Flag):
    NONE = 0
    #: The adapter can tell when the guest has run its scripts and powered off (a Watcher).
    WATCH_POWER = enum.auto()
    #: Publishing leaves a VM (rather than an image/file) at the target.
    CREATES_VM = enum.auto()
    #: An interrupted upload continues from what the platform has (a ResumableUpload).
    RESUMABLE_UPLOAD = enum.auto()


def guest_login(capabilities: Capability) -> bool:
    """Whether publishing ends in a guest someone logs into (a VM, or one booted from the image
    and watched): only then can the guest say "This system was not shut down properly". A file
    in a folder, a gallery image or a vDisk alone has no guest yet."""
    return bool(capabilities & (Capability.WATCH_POWER | Capability.CREATES_VM))


# ---------------------------------------------------------------- errors
class AdapterError(Exception):
    """Base of every error an adapter raises; the message is shown to users as is.

    ``retryable`` errors are retried by :func:`adapters.retry.retrying`, after at least
    ``retry_after`` seconds when the platform said so (HTTP Retry-After)."""

    retryable: ClassVar[bool] = False

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class RetryableError(AdapterError):
    """A transient platform failure (HTTP 429/503, a dropped connection): worth retrying."""

    retryable = True


class RefusedError(RetryableError):
    """The platform refused the request before acting on it (HTTP 429 or 503): safe to send
    again even when the request creates something (:data:`adapters.retry.REFUSED_STATUSES`)."""


class AuthError(AdapterError):
    """The platform rejected the credentials."""


class NotFoundError(AdapterError):
    """A named object (datacenter, datastore, folder, bucket, ...) does not exist."""


class InsufficientSpaceError(AdapterError):
    """The target storage cannot hold the disk."""


class PlatformTimeoutError(AdapterError):
    """The platform's API did not answer in time (worth another call)."""

    retryable = True


class GuestTimeoutError(AdapterError):
    """The guest did not power off within ``watch_timeout``: the whole wait is spent, so it is
    not retryable (a retry would wait that long again)."""


class PlatformError(AdapterError):
    """Any other failure reported by the platform (its message is kept)."""


def error_for_waiter(exc: BaseException, where: str) -> AdapterError:
    """What one task waiting on a shared watch (one poller for many tasks) raises when the
    poller failed: its own object, since one instance raised in many tasks collects all their
    tracebacks; an AdapterError as it is, anything else (a bug, an SDK surprise) as a
    PlatformError naming it."""
    if isinstance(exc, AdapterError):
        return copy.copy(exc).with_traceback(None)
    return PlatformError(f"{where} failed: {error_words(exc)}")


_ERRNO_WORDS = {errno.ECONNREFUSED: "connection refused", errno.ETIMEDOUT: "timed out",
                errno.ECONNRESET: "the connection was reset", errno.EHOSTUNREACH: "the host is unreachable",
                errno.ENETUNREACH: "the network is unreachable", errno.EPIPE: "the connection was closed"}


def error_words(exc: BaseException, about: str | None = None, *, quote: bool = True) -> str:
    """``exc`` as words a user can act on, never its Python class name (the log keeps that).

    ``about`` (a host, a path) is put in front. The causes are looked through, so an SDK's
    wrapper of a refused connection reads "connection refused". With ``quote=False`` an
    exception's own text is never shown (it may quote a URL with a secret in it): only the
    words for the kinds known here."""
    words = _kind_words(exc) or (_own_words(exc) if quote else "") or "an unexpected error"
    return f"{about}: {words}" if about else words


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen and len(seen) < 10:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)


def untrusted_certificate(exc: BaseException) -> str | None:
    """Why the server's TLS certificate was refused (OpenSSL's words), when a certificate check
    is among ``exc``'s causes; None otherwise. Not worth another try: the same certificate comes
    back, so an adapter raises a non-retryable error saying :func:`untrusted_words`."""
    for cause in _causes(exc):
        # an SDK's wrapper (aiohttp's ClientConnectorCertificateError) is one too, without the words
        message = getattr(cause, "verify_message", None)
        if isinstance(cause, ssl.SSLCertVerificationError) and message is not None:
            return str(message) or "no reason given"
        inner = getattr(cause, "certificate_error", None)
        if isinstance(inner, ssl.SSLCertVerificationError) and inner is not cause:
            return untrusted_certificate(inner)
    return None


def untrusted_words(reason: str) -> str:
    return (f"the server's TLS certificate is not trusted ({reason}): an intercepting proxy, or "
            "its CA is missing from this host's trust store (ca_file)")


def _kind_words(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and (
                getattr(cause, "verify_message", None) is None and cause.__cause__ is not None):
            continue  # a wrapper of the check's own error, which has the words
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the TLS handshake failed (the certificate could not be verified: " \
                   f"{getattr(cause, 'verify_message', None) or 'no reason given'})"
        if isinstance(cause, ssl.SSLError):
            code = getattr(cause, "reason", None)  # set by the ssl module, not by ssl.SSLError(...)
            reason = code.replace("_", " ").lower() if code else cause.strerror or str(cause)
            return f"the TLS handshake failed ({reason or 'no reason given'})"
        if isinstance(cause, TimeoutError):  # asyncio.TimeoutError and socket.timeout too
            return "timed out"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[cause.errno]
    return ""


def _own_words(exc: BaseException) -> str:
    """The text of the first exception in the chain that has some (a bare wrapper has none)."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            name = cause.filename
            path = os.fsdecode(name) if isinstance(name, str | bytes) else name
            return cause.strerror + (f": {path}" if path is not None else "")
        if isinstance(cause, KeyError) and cause.args:  # its str() is the bare key
            return f"{cause.args[0]!r} is missing"
        text = str(cause).strip() or str(getattr(cause, "message", "") or "").strip()
        if text:
            return text
    return ""


# ---------------------------------------------------------------- config
def _relative_to_catalog(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


#: A path in layerbot.yml, resolved against the catalog file's directory.
CatalogPath = Annotated[Path, AfterValidator(_relative_to_catalog)]


PathKind = Literal["dir", "file", "other"]


def path_kind(value: Path) -> PathKind | None:
    """What is at a catalog path (symlinks followed), None when nothing is. Path.is_dir()
    raises for a name too long or a folder without permission: that is a ValueError with the
    system's reason, for the catalog's messages."""
    try:
        mode = value.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"cannot look at this path: {exc.strerror or exc}") from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _existing_file(value: Path) -> Path:
    kind = path_kind(value)
    if kind == "dir":
        raise ValueError(f"{str(value)!r} is a directory, not a file")
    if kind is None:
        raise ValueError(f"file {str(value)!r} does not exist")
    if kind != "file":
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


@dataclass(frozen=True)
class ConnectorReference:
    """A connector setting that names another connector (e.g. the hypervisor a Provisioning
    connector also creates its VM on): the catalog checks at load that it exists and is of one
    of ``types``, then links it (:meth:`ConnectorConfig.linked`)."""

    #: the setting, e.g. "hypervisor"
    key: str
    #: the connector it names
    name: str
    types: frozenset[str]


class ConnectorConfig(BaseModel):
    """Settings shared by every connector type; each adapter module subclasses it."""

    model_config = ConfigDict(extra="forbid")
    #: The template filesystems (``disk.filesystem``) this target can use; None: any.
    filesystems: ClassVar[tuple[str, ...] | None] = None
    #: The largest template disk (``disk.size_gib``) this target takes; None: no known limit.
    max_disk_gib: ClassVar[int | None] = None
    type: str
    #: Script files (paths relative to the catalog file) copied into the image
    #: and run by the guest on first boot, in this order.
    scripts: list[CatalogFile] = Field(default_factory=list)
    #: ``auto``: the first-boot runner powers the guest off after the scripts;
    #: ``manual``: an admin shuts it down.
    shutdown: Literal["auto", "manual"] = "auto"
    notify_channel: str | None = None
    access: AccessConfig | None = None
    #: Only a runner started with all of these tags (``layerbot worker --tags``) works this
    #: connector's tasks; none: any runner.
    runner_tags: list[str] = Field(default_factory=list)
    _linked: dict[str, ConnectorConfig] = PrivateAttr(default_factory=dict)

    def references(self) -> list[ConnectorReference]:
        """The other connectors this one names (none by default)."""
        return []

    def link_problems(self, key: str, name: str, config: ConnectorConfig) -> list[str]:
        """Why the connector ``name`` (``config``, of an allowed type) cannot be linked as the
        reference ``key`` (none by default); the catalog reports them at load."""
        return []

    def link(self, key: str, config: ConnectorConfig) -> None:
        """Resolve the reference ``key`` (the catalog, once it checked it)."""
        self._linked[key] = config

    def linked(self, key: str) -> ConnectorConfig:
        """The connector the reference ``key`` names, as the catalog linked it."""
        try:
            return self._linked[key]
        except KeyError:
            raise AdapterError(f"connector setting {key}: the connector it names was not linked "
                               "(connectors that name others are loaded through the catalog)") from None

    @field_validator("scripts")
    @classmethod
    def _script_names_unique(cls, value: list[Path]) -> list[Path]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two scripts share the file name {dupes[0]!r}")
        return value

    @field_validator("runner_tags")
    @classmethod
    def _tags_valid(cls, value: list[str]) -> list[str]:
        for tag in value:
            check_runner_tag(tag)
        dupes = sorted({t for t in value if value.count(t) > 1})
        if dupes:
            raise ValueError(f"the tag {dupes[0]!r} is named twice")
        return value

    def disk_limit_gib(self) -> int | None:
        """The largest ``disk.size_gib`` of a template publishing to this connector (a
        connector whose format is a setting overrides this)."""
        return self.max_disk_gib


#: what a runner tag may be: it is written in ``--tags a,b`` lists and matched exactly
RUNNER_TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def check_runner_tag(tag: str) -> str:
    """``tag`` if it is a valid runner tag, else ValueError naming it."""
    if not RUNNER_TAG_PATTERN.fullmatch(tag):
        raise ValueError(f"runner tag {tag!r}: lowercase letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 63 characters")
    return tag


#: formats with a hard size limit: qemu-img's vpc driver refuses a VHD over 2040 GiB
#: (VHD_MAX_SECTORS, "The image size is too large for file format 'vpc'"), fixed or dynamic
FORMAT_MAX_GIB: dict[str, int] = {"vhd": 2040, "vhd-dynamic": 2040}


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


async def next_report(reports: asyncio.Queue[Any], deadline: float, timed_out: str) -> Any:
    """The next report a shared watch queued for one task, before ``deadline`` (``time.time()``
    seconds): the poller's error is raised (see :func:`error_for_waiter`), and
    GuestTimeoutError(``timed_out``) once the deadline has passed."""
    remaining = deadline - time.time()
    try:
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining):
            report = await reports.get()
    except TimeoutError:
        raise GuestTimeoutError(timed_out) from None
    if isinstance(report, BaseException):
        raise report
    return report


ProgressFn = Callable[[float, str], Awaitable[None]]
PersistFn = Callable[[list[Resource]], Awaitable[None]]


async def _keep_in_memory(resources: list[Resource]) -> None:
    """Persist nowhere (tests, the CLI's one-off calls)."""


#: An adapter's reader of the dict ``Published.resource`` was before it was typed.
LegacyPublished = Callable[[Mapping[str, Any]], Resource | None]


@dataclass
class Published:
    """The result of a successful publish: where it is, and how to find it again."""

    #: URL of the VM or image (console deep link, file URL, ...).
    link: str
    #: One-line description, e.g. "VM win10-office-20261126-010101-3f9a (powered off)".
    summary: str
    #: What was published, typed by the adapter (its file, its VM and what the watch needs).
    resource: Resource | None = None

    def expect(self, cls: type[R]) -> R:
        """The resource as the adapter's type; PlatformError when it is another."""
        if not isinstance(self.resource, cls):
            found = self.resource.describe() if self.resource is not None else "nothing"
            raise PlatformError(f"the published result holds {found}, not a {cls.kind}")
        return self.resource

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link, "summary": self.summary,
                "resource": self.resource.to_json() if self.resource is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "published",
                  legacy: LegacyPublished | None = None) -> Published:
        """From the store's JSON. A resource without a ``kind`` is a row written before
        resources were typed: the adapter's ``legacy`` reader reads it."""
        raw = data.get("resource")
        resource: Resource | None = None
        if isinstance(raw, Mapping) and "kind" in raw:
            resource = load([raw], where=f"{where}: published.resource")[0]
        elif raw:
            if legacy is None or not isinstance(raw, Mapping):
                raise ResourceError(f"{where}: published.resource: the adapter cannot read "
                                    f"{raw!r}")
            resource = legacy(raw)
        return cls(link=data["link"], summary=data["summary"], resource=resource)


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
    #: Writes :attr:`resources` to the task store; called by record/forget before they return.
    persist: PersistFn = _keep_in_memory
    #: What exists at the platform, oldest first (restored from the store after a crash).
    resources: list[Resource] = field(default_factory=list)
    #: Seconds to wait for the guest to power off (adapters with WATCH_POWER).
    watch_timeout: float = 24 * 3600.0
    #: Where an adapter may put temporary files (None: the system's temp dir). Name them with
    #: ``compositor.sweep.owner_prefix(BUILD_PREFIX)`` so that a runner starting after this
    #: one was killed removes them (``sweep_stale``).
    scratch_dir: Path | None = None
    #: Set by the publish's last step.
    published: Published | None = None
    #: One line per object cleanup removed (or could not), for the task's message.
    removed: list[str] = field(default_factory=list)

    async def record(self, resource: Resource) -> None:
        """Remember ``resource`` (persisted before this returns): call it before relying on it."""
        self.resources.append(resource)
        await self.persist(self.resources)

    async def replace(self, old: Resource, new: Resource) -> None:
        """``old`` became ``new`` (an import lease became a VM): one write, nothing lost."""
        self.resources[:] = [new if r is old else r for r in self.resources]
        if new not in self.resources:
            self.resources.append(new)
        await self.persist(self.resources)

    async def forget(self, resource: Resource) -> None:
        self.resources[:] = [r for r in self.resources if r is not resource]
        await self.persist(self.resources)


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

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        """The publish, as steps; the last one sets ``ctx.published``."""
        ...

    def next_steps(self, published: Published) -> str:
        """What the admin does next on this platform (the seed's wording)."""
        ...

    async def remove(self, resource: Resource) -> list[str]:
        """Remove one recorded object. Idempotent: [] when it was already gone, else a line
        per object removed (an import: its lease and its VM), for the task's message."""
        ...

    async def close(self) -> None:
        """Release sessions/connections. Idempotent."""
        ...


@runtime_checkable
class Watcher(Protocol):
    """An adapter with ``Capability.WATCH_POWER``."""

    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        """Return once the guest has run its scripts and powered off; raise
        GuestTimeoutError ``ctx.watch_timeout`` seconds after the publish (a watch resumed
        by another runner keeps the deadline)."""
        ...


@runtime_checkable
class ResumableUpload(Protocol):
    """An adapter with ``Capability.RESUMABLE_UPLOAD``."""

    async def uploaded_bytes(self, upload: Resource, artifact: Path) -> int:
        """How much of ``artifact`` the platform already holds in the recorded ``upload``,
        verified against the artifact (0: start over)."""
        ...


# ---------------------------------------------------------------- driving adapters
#: What cleanup removes after each outcome.
_REMOVED_AFTER: dict[Outcome, frozenset[Lifetime]] = {
    Outcome.SUCCEEDED: frozenset({Lifetime.STAGING}),
    Outcome.FAILED: frozenset({Lifetime.STAGING, Lifetime.PARTIAL}),
    Outcome.CANCELLED: frozenset({Lifetime.STAGING, Lifetime.PARTIAL}),
    Outcome.DETACHED: frozenset(),
}


#: How a cleanup line reporting a resource that could not be removed begins.
REMOVAL_PROBLEM = "could not remove "


def removal_problems(lines: Iterable[str]) -> list[str]:
    """The lines of :func:`clean_up` that report a resource it could not remove."""
    return [line for line in lines if line.startswith(REMOVAL_PROBLEM)]


async def clean_up(adapter: Adapter, ctx: PublishContext, outcome: Outcome,
                   among: Iterable[Resource] | None = None) -> list[str]:
    """Remove the recorded resources that ``outcome`` calls for (of ``among``, default all),
    newest first, forgetting each once it is gone. One that cannot be removed stays recorded
    (a later cleanup tries again) and is reported; the others are still removed."""
    wanted = _REMOVED_AFTER[outcome]
    candidates = list(ctx.resources if among is None else among)
    lines: list[str] = []
    for resource in reversed(candidates):
        if resource.lifetime not in wanted or not any(r is resource for r in ctx.resources):
            continue
        try:
            removed = await adapter.remove(resource)
        except (AdapterError, OSError) as exc:
            log.warning("%s: could not remove %s: %s", ctx.task_id, resource.describe(), exc)
            lines.append(f"{REMOVAL_PROBLEM}{resource.describe()}: {exc}")
            continue
        await ctx.forget(resource)
        lines += removed
    ctx.removed += lines
    return lines


def recorded_since(ctx: PublishContext, before: list[Resource]) -> list[Resource]:
    """The resources recorded after ``before`` was taken (by identity: equal ones may repeat)."""
    return [r for r in ctx.resources if not any(r is b for b in before)]


class PlatformStep:
    """One step of a platform's publish: runs ``action``; its cleanup removes what the action
    recorded, as :func:`clean_up` does for the step's outcome."""

    def __init__(self, name: str, adapter: Adapter,
                 action: Callable[[PublishContext], Awaitable[None]]) -> None:
        self.name = name
        self.adapter = adapter
        self.action = action
        self._before: list[Resource] = []

    def recorded(self, ctx: PublishContext) -> list[Resource]:
        return recorded_since(ctx, self._before)

    async def run(self, ctx: PublishContext) -> None:
        self._before = list(ctx.resources)
        await self.action(ctx)

    async def cleanup(self, ctx: PublishContext, outcome: Outcome) -> None:
        await clean_up(self.adapter, ctx, outcome, self.recorded(ctx))


async def publish(adapter: Adapter, ctx: PublishContext) -> Published:
    """Run the adapter's steps (undone newest first on failure or cancel)."""
    await StepRunner(adapter.steps(ctx)).run(ctx)
    # staging a step took over from an earlier attempt (a resumed upload) is not its own
    await clean_up(adapter, ctx, Outcome.SUCCEEDED)
    if ctx.published is None:
        raise PlatformError(f"{adapter.platform}: the publish steps finished without a result")
    return ctx.published
