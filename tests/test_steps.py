from __future__ import annotations

import asyncio

import pytest

from adapters.steps import Detach, Outcome, StepRunner, StopReason


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.cleaned: list[tuple[str, Outcome]] = []


class Named:
    def __init__(self, name: str, *, fail: bool = False, block: bool = False,
                 cleanup_fails: bool = False) -> None:
        self.name, self.fail, self.block, self.cleanup_fails = name, fail, block, cleanup_fails

    async def run(self, ctx: Recorder) -> None:
        ctx.ran.append(self.name)
        if self.block:
            await asyncio.Event().wait()
        if self.fail:
            raise RuntimeError(f"{self.name} broke")

    async def cleanup(self, ctx: Recorder, outcome: Outcome) -> None:
        ctx.cleaned.append((self.name, outcome))
        if self.cleanup_fails:
            raise OSError("cleanup broke")


async def test_cleanup_runs_in_reverse_for_started_steps_only() -> None:
    rec = Recorder()
    with pytest.raises(RuntimeError, match="b broke"):
        await StepRunner([Named("a"), Named("b", fail=True), Named("c")]).run(rec)
    assert rec.ran == ["a", "b"]
    assert rec.cleaned == [("b", Outcome.FAILED), ("a", Outcome.FAILED)]


async def test_a_failing_cleanup_does_not_stop_the_others() -> None:
    rec = Recorder()
    outcome = await StepRunner([Named("a"), Named("b", cleanup_fails=True)]).run(rec)
    assert outcome is Outcome.SUCCEEDED
    assert [n for n, _ in rec.cleaned] == ["b", "a"]


@pytest.mark.parametrize(("message", "expected"), [(StopReason.CANCEL.value, Outcome.CANCELLED),
                                                   ("user", Outcome.CANCELLED),
                                                   (StopReason.DETACH.value, Outcome.DETACHED)])
async def test_cancel_and_detach(message: str, expected: Outcome) -> None:
    rec = Recorder()
    job = asyncio.create_task(StepRunner([Named("a"), Named("b", block=True), Named("c")]).run(rec))
    await asyncio.sleep(0.05)
    job.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await job
    assert rec.ran == ["a", "b"]  # nothing runs after a cancel
    assert rec.cleaned == [("b", expected), ("a", expected)]


async def test_a_step_that_detaches_skips_real_cleanup() -> None:
    class Leaving(Named):
        async def run(self, ctx: Recorder) -> None:
            ctx.ran.append(self.name)
            raise Detach("another runner has the task")

    rec = Recorder()
    with pytest.raises(Detach):
        await StepRunner([Named("a"), Leaving("b"), Named("c")]).run(rec)
    assert rec.cleaned == [("b", Outcome.DETACHED), ("a", Outcome.DETACHED)]


class Slow(Named):
    """A step whose cleanup takes a while and records when it ends."""

    async def cleanup(self, ctx: Recorder, outcome: Outcome) -> None:
        ctx.cleaned.append((self.name, outcome))
        await asyncio.sleep(0.3)
        ctx.cleaned.append((f"{self.name} done", outcome))


async def test_a_detach_during_a_cancel_cleanup_waits_for_it_then_stops() -> None:
    rec = Recorder()
    ended: list[str] = []

    async def job() -> None:
        try:
            await StepRunner([Named("compose"), Slow("upload", block=True)]).run(rec)
        finally:
            ended.append("runner returned")  # the caller closes the adapter here

    task = asyncio.create_task(job())
    await asyncio.sleep(0.05)
    task.cancel(StopReason.CANCEL.value)  # a user cancel ...
    await asyncio.sleep(0.1)
    task.cancel(StopReason.DETACH.value)  # ... then the service stops, mid-cleanup
    with pytest.raises(asyncio.CancelledError) as stopped:
        await task
    assert StopReason.DETACH.value in stopped.value.args
    assert rec.cleaned == [("upload", Outcome.CANCELLED), ("upload done", Outcome.CANCELLED),
                           ("compose", Outcome.CANCELLED)]
    assert ended == ["runner returned"]
