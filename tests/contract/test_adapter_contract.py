"""The adapter contract (adapters/base.py), checked against every adapter in conftest.TARGETS:
publish records its resources and cleanup leaves nothing; a cancel mid-upload leaves
nothing; a crash (detach) mid-upload is resumed by another adapter from the resources read
back from the store's JSON; the cleanup after success removes the staging upload at the platform;
close() is idempotent and releases only its own share of a shared session."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from adapters import resources
from adapters.base import Adapter, Capability, PublishContext, Watcher, clean_up, publish
from adapters.resources import Lifetime, Resource
from adapters.steps import Outcome, cancel, detach

from .conftest import Target

pytestmark = pytest.mark.timeout(180)


@dataclass
class Run:
    """One publish attempt as a runner would see it: what was persisted, and the notes."""

    target: Target
    name: str
    stored: list[dict[str, object]] = field(default_factory=list)
    ever: list[Resource] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    on_progress: Callable[[PublishContext], Awaitable[None]] | None = None

    def context(self, recorded: list[Resource] | None = None) -> PublishContext:
        async def persist(now: list[Resource]) -> None:
            self.stored = resources.dump(now)
            self.ever += [r for r in now if not any(r is e for e in self.ever)]

        async def progress(fraction: float, note: str) -> None:
            self.notes.append((fraction, note))
            if self.on_progress is not None:
                await self.on_progress(ctx)

        ctx = PublishContext(
            task_id="t0c0ffee", template="contract", image_name=self.name,
            artifact=self.target.artifact, artifact_format=self.target.artifact_format,
            virtual_size=self.target.artifact.stat().st_size, progress=progress,
            persist=persist, resources=list(recorded or []))
        return ctx


def stop_mid_upload(job: list[asyncio.Task[object]], how: Callable[[asyncio.Task[object]], bool]
                    ) -> Callable[[PublishContext], Awaitable[None]]:
    """Stop the publish at its first progress report once something is recorded."""
    async def hook(ctx: PublishContext) -> None:
        if ctx.resources and job:
            how(job[0])
    return hook


async def start(adapter: Adapter, ctx: PublishContext, job: list[asyncio.Task[object]]) -> None:
    job.append(asyncio.create_task(publish(adapter, ctx)))
    with pytest.raises(asyncio.CancelledError):
        await job[0]


async def test_publish_records_resources_and_cleanup_leaves_nothing(target: Target) -> None:
    adapter = target.make()
    run = Run(target, "contract-publish")
    ctx = run.context()
    try:
        published = await publish(adapter, ctx)
        assert published is ctx.published and published.link
        assert ctx.resources and any(r.lifetime is Lifetime.PARTIAL for r in ctx.resources)
        assert resources.load(run.stored, where="test") == ctx.resources  # the JSON round trip
        assert target.leftovers(run.name)
        if Capability.WATCH_POWER in adapter.capabilities:
            assert isinstance(adapter, Watcher)
        else:
            assert not hasattr(adapter, "wait_for_shutdown")  # capabilities are used
        # a runner after a crash: a new adapter and the resources read back from the store
        again = target.make()
        later = run.context(resources.load(run.stored, where="test"))
        await clean_up(again, later, Outcome.FAILED)
        assert target.leftovers(run.name) == []
        assert [r for r in later.resources if r.lifetime is not Lifetime.MARK] == []
        assert await clean_up(again, later, Outcome.FAILED) == []  # idempotent
        await again.close()
    finally:
        await adapter.close()


async def test_cancel_mid_upload_leaves_nothing(target: Target) -> None:
    adapter = target.make()
    run = Run(target, "contract-cancel")
    job: list[asyncio.Task[object]] = []
    run.on_progress = stop_mid_upload(job, cancel)
    ctx = run.context()
    try:
        await start(adapter, ctx, job)
        assert run.ever, "something was recorded before the cancel"
        assert target.leftovers(run.name) == []
        assert run.stored == [] and ctx.resources == []
        assert ctx.removed  # and the runner can say what was removed
    finally:
        await adapter.close()


async def test_crash_mid_upload_then_another_runner_resumes(target: Target) -> None:
    adapter = target.make()
    run = Run(target, "contract-crash")
    job: list[asyncio.Task[object]] = []
    run.on_progress = stop_mid_upload(job, detach)
    try:
        await start(adapter, run.context(), job)
    finally:
        await adapter.close()
    assert run.stored, "a detach keeps what was recorded for the next runner"
    recorded = resources.load(run.stored, where="test")

    successor = target.make()
    resumed = Run(target, "contract-crash")
    ctx = resumed.context(recorded)
    try:
        resumable = Capability.RESUMABLE_UPLOAD in successor.capabilities
        # what the runner does when it takes an uploading task over
        await clean_up(successor, ctx, Outcome.FAILED,
                       [r for r in ctx.resources if not (resumable and r.lifetime is Lifetime.STAGING)])
        published = await publish(successor, ctx)
        assert published.link
        if resumable:
            first = resumed.notes[0]
            assert first[0] > 0 and "resuming" in first[1], resumed.notes[:3]
        assert not [r for r in ctx.resources if r.lifetime is Lifetime.STAGING]
        await clean_up(successor, ctx, Outcome.FAILED)
        assert target.leftovers("contract-crash") == []
    finally:
        await successor.close()


async def test_staging_is_removed_after_success(target: Target) -> None:
    adapter = target.make()
    removals: list[tuple[Resource, list[str]]] = []
    remove = adapter.remove

    async def spy(resource: Resource) -> list[str]:
        removed = await remove(resource)
        removals.append((resource, removed))
        return removed

    adapter.remove = spy  # type: ignore[method-assign]  # this adapter only
    run = Run(target, "contract-staging")
    ctx = run.context()
    try:
        await publish(adapter, ctx)
        assert not [r for r in ctx.resources if r.lifetime is Lifetime.STAGING]
        staging = [r for r in run.ever if r.lifetime is Lifetime.STAGING]
        if target.staging_exists is None:
            assert staging == []  # a new STAGING resource needs its check in conftest
        else:
            assert staging, "the adapter records its staging upload"
        for resource in staging:  # the cleanup after success removed it, at the platform
            # (or the record that replaced it once more was known of the same object: a
            # finished upload's generation)
            assert any(r.describe() == resource.describe() and lines == [resource.describe()]
                       for r, lines in removals), (resource, removals)
            assert target.staging_exists is not None and not target.staging_exists(resource)
        assert all(r.lifetime is Lifetime.STAGING for r, _ in removals)  # and nothing else
        await clean_up(adapter, ctx, Outcome.FAILED)
        assert target.leftovers(run.name) == []
    finally:
        await adapter.close()


async def test_close_is_idempotent_and_releases_only_its_share(target: Target) -> None:
    first, second = target.make(), target.make()
    pool = target.sessions
    try:
        if pool is not None:
            [(_, session, users)] = pool.shared()
            assert users == 2  # one session for both
        await first.close()
        await first.close()
        if pool is not None:
            [(_, still, users)] = pool.shared()
            assert still is session and users == 1 and not session.closed
        run = Run(target, "contract-close")
        ctx = run.context()
        await publish(second, ctx)  # the other adapter still works
        await clean_up(second, ctx, Outcome.FAILED)
        assert target.leftovers(run.name) == []
        if pool is not None:
            assert pool.shared() and session.logins == 1  # no login of a closed session
    finally:
        await second.close()
    if pool is not None:
        assert pool.shared() == [] and session.closed  # gone once both are closed
