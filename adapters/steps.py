"""Steps with cleanup, after Packer's multistep, and the one vocabulary of stopping a task.

Each step has ``run`` and ``cleanup``. The runner keeps a stack of the steps that
started and, whatever happens (success, failure, cancellation), calls their
cleanups newest first; one failing cleanup does not stop the others. A task's steps
(compose, upload, watch) and a platform's publish steps (upload, import, ...) run on
the same :class:`StepRunner`.

A task is stopped in one of two ways:

- **cancel** (a user asked): undo what was made, the task ends ``cancelled``;
- **detach** (the runner shuts down or lost its lease): stop, but leave every recorded
  resource for the next runner, which resumes the task.

:func:`cancel` and :func:`detach` send them to an asyncio task; inside a step,
:class:`Detach` (or the store's lease-lost error, a subclass) detaches too;
:func:`is_detach` tells the two apart and :func:`outcome_of` maps them onto an
:class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The runner let go of the task (shutdown/detach, lease lost): leave everything
    #: as it is, for the next runner to resume.
    DETACHED = "detached"


class StopReason(enum.Enum):
    """The message of the asyncio cancellation a runner sends to a task's coroutine."""

    CANCEL = "layerbot:cancel"
    DETACH = "layerbot:detach"


class Detach(Exception):
    """Raised inside a step: stop, leave everything for the next runner (no cleanup)."""


def cancel(task: asyncio.Task[Any]) -> bool:
    """Cancel the task for good: its steps undo what they made."""
    return task.cancel(StopReason.CANCEL.value)


def detach(task: asyncio.Task[Any]) -> bool:
    """Stop working the task but keep what it recorded, for the next runner."""
    return task.cancel(StopReason.DETACH.value)


def is_detach(exc: BaseException) -> bool:
    """True for a detach: a :func:`detach` cancellation or a :class:`Detach` error."""
    if isinstance(exc, Detach):
        return True
    return isinstance(exc, asyncio.CancelledError) and StopReason.DETACH.value in exc.args


def outcome_of(exc: BaseException) -> Outcome:
    """How steps end when ``exc`` interrupts them."""
    if is_detach(exc):
        return Outcome.DETACHED
    if isinstance(exc, asyncio.CancelledError):
        return Outcome.CANCELLED
    return Outcome.FAILED


class Step(Protocol[C_contra]):
    name: str

    async def run(self, ctx: C_contra) -> None: ...

    async def cleanup(self, ctx: C_contra, outcome: Outcome) -> None: ...


class StepRunner(Generic[C]):
    def __init__(self, steps: Sequence[Step[C]]) -> None:
        self.steps = list(steps)

    async def run(self, ctx: C) -> Outcome:
        """Run the steps in order; re-raises the failure after cleanup."""
        stack: list[Step[C]] = []
        outcome = Outcome.FAILED
        try:
            for step in self.steps:
                stack.append(step)
                await step.run(ctx)
            outcome = Outcome.SUCCEEDED
            return outcome
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            stopped: asyncio.CancelledError | None = None
            for step in reversed(stack):
                cleanup = asyncio.ensure_future(step.cleanup(ctx, outcome))
                # A stop during a cleanup (a detach after a cancel) waits for every cleanup to
                # end, newest first, and is raised after them: none overlaps the next one or the
                # caller's own (closing the adapter).
                while not cleanup.done():
                    try:
                        await asyncio.shield(cleanup)
                    except asyncio.CancelledError as exc:
                        if cleanup.cancelled():  # the cleanup's own, not a stop of this task
                            break
                        log.warning("stop during the cleanup of %s: finishing it first", step.name)
                        stopped = exc
                    except Exception:
                        log.exception("cleanup of step %s failed", step.name)
            if stopped is not None:
                raise stopped
