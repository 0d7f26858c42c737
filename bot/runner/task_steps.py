"""One "Publishing Layered Image" task as a list of steps with cleanup.

compose → upload (the adapter's steps, nested) → [watch for shutdown] → done

Every state change is written to the store (with its event) before the work it
announces starts. A task resumed by another runner restarts from its stage:
``action_required`` skips straight to watching (first removing any staging upload left
by a runner that died after publishing); ``uploading`` first removes the partial work
recorded by the dead runner (but keeps a resumable upload, which the adapter continues),
then composites (a cache hit) again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapters
from adapters import resources
from adapters.base import (
    Adapter,
    Capability,
    ProgressFn,
    PublishContext,
    Published,
    Watcher,
    clean_up,
    guest_login,
    removal_problems,
)
from adapters.base import publish as publish_steps
from adapters.resources import Lifetime, Resource
from adapters.steps import Outcome, Step
from bot import logcontext, messages, metrics
from bot.catalog import Catalog, Template
from bot.store import states
from bot.store.interface import Store
from bot.store.model import LeaseLost, Task
from bot.store.states import EventKind
from compositor.evict import ArtifactHold, evict, hold_artifact_async
from compositor.firstboot import publish_layer
from compositor.isolated import build_image_isolated
from compositor.spec import BuiltImage, ImageSpec, LayerSource

log = logging.getLogger(__name__)
GIB = 1 << 30


class TaskConfigError(Exception):
    """The catalog no longer describes this task (template or connector removed)."""


@dataclass
class Job:
    task: Task
    store: Store
    owner: str
    catalog: Catalog
    template: Template
    adapter: Adapter
    started: float = field(default_factory=time.monotonic)
    built: BuiltImage | None = None
    published: Published | None = None
    resources: list[Resource] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: keeps cache eviction (of any runner) away from the artifact until it is uploaded
    artifact_hold: ArtifactHold | None = None
    #: called once the task waits for its guest: the runner frees its compose/upload slot
    on_waiting: Callable[[], None] = lambda: None
    #: called once the task is finished (its lease went with the verdict): renewals stop
    on_finished: Callable[[], None] = lambda: None
    _last_progress: tuple[float, float] = (0.0, -100.0)  # (time, percent) last written
    _progress_lock: threading.Lock = field(default_factory=threading.Lock)

    # Store calls run in worker threads: a commit waits for fsync, the event loop must not.
    async def update(self, *, event: tuple[EventKind, str] | None = None,
                     data: dict[str, Any] | None = None, **fields: Any) -> None:
        was_finished = self.task.finished
        self.task = await asyncio.to_thread(
            self.store.update, self.task.id, self.owner, event=event, data=data,
            fence=self.task.lease_generation, **fields)
        if event is not None:
            _log_event(*event)
        if self.task.finished:
            if not was_finished:
                metrics.count_task_finished(self.task.platform or "", self.task.status)
            self.on_finished()

    async def persist(self, recorded: list[Resource]) -> None:
        """Write what exists at the platform (an adapter calls it before relying on it)."""
        await self.update(resources=resources.dump(recorded))

    async def add_event(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self.store.add_event, self.task.id, kind, message, data,
                                owner=self.owner, fence=self.task.lease_generation)
        _log_event(kind, message)

    def progress(self, percent: float, note: str) -> None:
        """Store progress at most once a second, an event every 10 %. Blocking; thread-safe."""
        now = time.monotonic()
        with self._progress_lock:
            last_at, last_pct = self._last_progress
            if now - last_at < 1.0 and percent < 100:
                return
            event = None
            if percent - last_pct >= 10 or percent >= 100:
                event = (EventKind.PROGRESS, f"{self.task.stage}: {percent:.0f}% {note}".rstrip())
                self._last_progress = (now, percent)
            else:
                self._last_progress = (now, last_pct)
        # a late report after this runner let go of the task is not ours to write
        with contextlib.suppress(LeaseLost):
            self.store.update(self.task.id, self.owner, progress=round(percent, 1), event=event,
                              data={"percent": percent}, fence=self.task.lease_generation)
            if event is not None:
                _log_event(*event)


def _log_event(kind: EventKind, message: str) -> None:
    """Each event of a task is also a log record (progress at DEBUG), so a service's log
    tells what its runner did; the record's task fields say which task."""
    log.log(logging.DEBUG if kind == EventKind.PROGRESS else logging.INFO, "%s: %s", kind, message)


def layer_sources(catalog: Catalog, template: Template) -> tuple[LayerSource, ...]:
    return tuple(
        LayerSource(name, layer.kind, layer.source) for name, layer in catalog.layers_of(template)
    )


def publish_layer_args(catalog: Catalog, template: Template,
                       layers: tuple[LayerSource, ...]) -> tuple[Any, ...]:
    """Arguments of compositor.firstboot.publish_layer (and its isolated twin)."""
    connector = catalog.connectors[template.connector]
    return (layers, template.disk.filesystem, list(connector.scripts), connector.shutdown,
            template.disk.size_gib)


def assemble_spec(template: Template, adapter: Adapter, layers: tuple[LayerSource, ...],
                  publish: tuple[Any, Any]) -> ImageSpec:
    files, links = publish
    return ImageSpec(
        layers=layers,
        size_gib=template.disk.size_gib,
        filesystem=template.disk.filesystem,
        format=adapter.disk_format(),
        extra_files=files,
        extra_symlinks=links,
    )


def image_spec(catalog: Catalog, template: Template, adapter: Adapter) -> ImageSpec:
    """The compositor's input. Looks into the layers (how the guest boots, where the first-boot
    runner hooks in): may take a while for big tar layers, and raises GuestOSError."""
    layers = layer_sources(catalog, template)
    publish = publish_layer(*publish_layer_args(catalog, template, layers))
    return assemble_spec(template, adapter, layers, publish)


class ComposeStep:
    name = "compose"

    async def run(self, job: Job) -> None:
        with metrics.timed_stage(self.name, job.adapter.platform):
            await self._compose(job)

    async def _compose(self, job: Job) -> None:
        # image_spec's guest inspection runs in the compositor's child process (reading a big
        # tar layer's index is seconds of Python, which would hold this process's GIL), while
        # it hashes and extracts the layers: both read the same archives.
        layers = layer_sources(job.catalog, job.template)
        _, _, scripts, shutdown, size_gib = publish_layer_args(job.catalog, job.template, layers)
        spec = assemble_spec(job.template, job.adapter, layers, ((), ()))
        await job.update(status=states.COMPOSITING, stage="compositing", progress=0.0,
                         event=(EventKind.STAGE, messages.stage_compositing(len(spec.layers))),
                         data={"step": 1, "steps": step_count(job)})

        # Progress arrives on the event loop; a store write waits for fsync, so every
        # report is handed to one writer thread (in order).
        writer = ThreadPoolExecutor(1, thread_name_prefix=f"progress-{job.task.id}")

        def on_progress(note: str, fraction: float) -> None:
            writer.submit(logcontext.in_context(job.progress, fraction * 100, note))

        started = time.monotonic()
        try:
            for attempt in (1, 2):
                # In a child process: its Python threads would otherwise hold this process's
                # GIL for tens of ms at a time, and serve's event loop would wait for it.
                built = await build_image_isolated(
                    spec,
                    work_dir=job.catalog.runner.work_dir,
                    cache_dir=job.catalog.runner.cache_dir,
                    progress=on_progress,
                    ram_scratch=job.catalog.runner.ram_scratch,
                    ram_dir=job.catalog.runner.ram_scratch_dir,
                    publish_layer=(scripts, shutdown, size_gib),
                )
                try:
                    job.artifact_hold = await hold_artifact_async(built.path)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    log.info("%s: %s was evicted before it could be held; building again",
                             job.task.id, built.path.name)
        finally:
            await asyncio.to_thread(writer.shutdown)
        job.built = built
        metrics.count_cache_lookup(built.cache_hit)
        if built.cache_hit:
            await job.add_event(EventKind.CACHE_HIT, messages.cache_hit(built.cache_key),
                                {"cache_key": built.cache_key})
        else:
            await job.add_event(EventKind.COMPOSITED,
                messages.composited(built.file_size, built.format, time.monotonic() - started),
                {"cache_key": built.cache_key, "bytes": built.file_size},
            )
        await self._evict(job, built)

    @staticmethod
    async def _evict(job: Job, built: BuiltImage) -> None:
        settings = job.catalog.runner
        limit, min_free = settings.cache_max_gib, settings.cache_min_free_gib
        if limit is None and not min_free:
            return
        try:
            result = await asyncio.to_thread(
                evict, settings.cache_dir, None if limit is None else int(limit * GIB),
                min_free_bytes=int(min_free * GIB), keep=[built.path])
        except OSError as exc:  # a full cache is no reason to fail a disk that was built
            log.warning("%s: cache eviction failed: %s", job.task.id, exc)
            return
        if result.removed:
            metrics.count_cache_evictions(len(result.removed), result.freed)
            await job.add_event(
                EventKind.CACHE_EVICTED,
                messages.cache_evicted(len(result.removed), result.freed, limit, min_free),
                {"keys": [e.key for e in result.removed], "bytes": result.freed,
                 "left": result.left},
            )

    async def cleanup(self, job: Job, outcome: Outcome) -> None:
        """The artifact stays in the cache; the compositor removes its own work files."""
        release_artifact(job)


class UploadStep:
    name = "upload"

    def __init__(self) -> None:
        self.context: PublishContext | None = None

    async def run(self, job: Job) -> None:
        with metrics.timed_stage(self.name, job.adapter.platform):
            await self._upload(job)

    async def _upload(self, job: Job) -> None:
        assert job.built is not None
        await job.update(status=states.UPLOADING, stage="uploading", progress=0.0,
                   event=(EventKind.STAGE, messages.stage_uploading(job.adapter.platform)),
                   data={"step": 2, "steps": step_count(job)})

        sent = metrics.UploadMeter(job.adapter.platform, job.built.file_size)

        async def report(fraction: float, note: str) -> None:
            sent.reached(fraction)
            await asyncio.to_thread(job.progress, fraction * 100, note)

        self.context = publish_context(job, report)
        try:
            published = await publish_steps(job.adapter, self.context)
        finally:
            release_artifact(job)
        sent.reached(1.0)  # adapters that report no progress (or not up to 100 %) sent it all
        job.published = published
        next_steps = job.adapter.next_steps(published)
        login = guest_login(job.adapter.capabilities)
        # the next step and whether the hint applies ride along, so Slack tells all in one reply
        await job.update(link=published.link, published=published.to_json(), progress=100.0,
                   event=(EventKind.DISK_CREATED, messages.disk_created(published.summary, published.link)),
                   data={"link": published.link, "summary": published.summary,
                         "next_steps": next_steps, "guest_login": login})
        await job.add_event(EventKind.NEXT_STEPS, next_steps)
        if login:
            await job.add_event(EventKind.HINT, messages.LOCAL_USER_HINT)

    async def cleanup(self, job: Job, outcome: Outcome) -> None:
        """The adapter's steps removed what they made; this catches what they could not
        reach (a failure between them and the store). A finished VM/image is kept."""
        if outcome in (Outcome.SUCCEEDED, Outcome.DETACHED) or job.published is not None:
            return
        await remove_partial(job)


class WatchStep:
    name = "watch"

    async def run(self, job: Job) -> None:
        with metrics.timed_stage(self.name, job.adapter.platform):
            await self._watch(job)

    async def _watch(self, job: Job) -> None:
        assert job.published is not None
        await job.update(status=states.ACTION_REQUIRED, stage="waiting for shutdown",
                   event=(EventKind.WAITING, messages.waiting_for_shutdown()),
                   data={"step": 3, "steps": step_count(job)})
        job.on_waiting()

        async def report(fraction: float, note: str) -> None:
            await job.add_event(EventKind.GUEST, note, {"fraction": fraction})

        assert isinstance(job.adapter, Watcher), "steps_for adds this step only with WATCH_POWER"
        await job.adapter.wait_for_shutdown(job.published, publish_context(job, report))

    async def cleanup(self, job: Job, outcome: Outcome) -> None:
        """Nothing to undo: the published VM stays, whatever happened while watching."""


def release_artifact(job: Job) -> None:
    if job.artifact_hold is not None:
        job.artifact_hold.release()
        job.artifact_hold = None


async def _no_report(fraction: float, note: str) -> None:
    """Cleanup reports no progress."""


def publish_context(job: Job, report: ProgressFn = _no_report) -> PublishContext:
    built = job.built
    return PublishContext(
        task_id=job.task.id,
        template=job.task.template,
        image_name=job.task.image_name,
        artifact=built.path if built else Path(),
        artifact_format=built.format if built else job.adapter.disk_format(),
        virtual_size=built.virtual_size if built else 0,
        progress=report,
        persist=job.persist,
        resources=job.resources,
        watch_timeout=job.catalog.runner.watch_timeout,
        scratch_dir=job.catalog.runner.work_dir,
        removed=job.removed,
    )


async def remove_partial(job: Job, *, keep_resumable: bool = False) -> list[Resource]:
    """Remove what a publish that did not finish left (newest first), e.g. after a crash.
    ``keep_resumable``: keep the upload of an adapter that can continue it.
    Returns what could not be removed (it stays recorded)."""
    keep = (keep_resumable and Capability.RESUMABLE_UPLOAD in job.adapter.capabilities)
    among = [r for r in job.resources
             if r.lifetime is not Lifetime.MARK and not (keep and r.lifetime is Lifetime.STAGING)]
    if not among:
        return []
    removed = await clean_up(job.adapter, publish_context(job), Outcome.FAILED, among)
    await job.add_event(EventKind.CLEANUP, "Removed: " + ", ".join(removed) if removed
                        else "Nothing to remove",
                        {"removed": removed, "not_removed": len(removal_problems(removed))})
    return [r for r in among if any(r is left for left in job.resources)]


async def remove_staging(job: Job) -> None:
    """After success: the uploads that only fed the image (left by a runner that died)."""
    if any(r.lifetime is Lifetime.STAGING for r in job.resources):
        await clean_up(job.adapter, publish_context(job), Outcome.SUCCEEDED)


def build_job(task: Task, store: Store, owner: str, catalog: Catalog,
              on_waiting: Callable[[], None] = lambda: None,
              on_finished: Callable[[], None] = lambda: None,
              clients: Mapping[str, object] | None = None) -> Job:
    if task.template not in catalog.templates:
        raise TaskConfigError(
            f"template {task.template!r} is no longer in {catalog.path.name}"
        )
    template = catalog.templates[task.template]
    if task.connector not in catalog.connectors:
        raise TaskConfigError(f"connector {task.connector!r} is no longer in {catalog.path.name}")
    config = catalog.connectors[task.connector]
    # read before the adapter exists: an error here leaves no session open
    adapter_class = adapters.adapter_class(config.type)
    recorded = resources.load(task.resources, where=f"task {task.id}",
                              legacy=getattr(adapter_class, "legacy_resources", None))
    published = None if task.published is None else Published.from_json(
        task.published, where=f"task {task.id}",
        legacy=getattr(adapter_class, "legacy_published", None))
    adapter = adapters.create(config, (clients or {}).get(config.type))
    job = Job(task=task, store=store, owner=owner, catalog=catalog, template=template,
              adapter=adapter, resources=recorded, on_waiting=on_waiting,
              on_finished=on_finished)
    job.published = published
    return job


def step_count(job: Job) -> int:
    """The steps a user sees: compose, upload and, where the guest is watched, watch."""
    return 3 if Capability.WATCH_POWER in job.adapter.capabilities else 2


def steps_for(job: Job) -> list[Step[Job]]:
    watch = Capability.WATCH_POWER in job.adapter.capabilities
    if job.published is not None:
        return [WatchStep()] if watch else []
    steps: list[Step[Job]] = [ComposeStep(), UploadStep()]
    if watch:
        steps.append(WatchStep())
    return steps
