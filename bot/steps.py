"""Steps with cleanup, after Packer's multistep.

Each step has ``run`` and ``cleanup``. The runner keeps a stack of the steps that
started and, whatever happens (success, failure, cancellation), calls their
cleanups newest first; one failing cleanup does not stop the others.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from adapters.base import DETACH_MESSAGE

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


#: Cancellation message that means "detach" rather than "cancel the task".
DETACH = DETACH_MESSAGE


class Detach(Exception):
    """Raised inside a step: stop, leave everything for the next runner (no cleanup)."""


class Step(Protocol[C_contra]):
    name: str

    async def run(self, ctx: C_contra) -> None: ...

    async def cleanup(self, ctx: C_contra, outcome: Outcome) -> None: ...


class StepRunner(Generic[C]):
    def __init__(self, steps: Sequence[Step[C]]) -> None:
        self.steps = list(steps)
        self.started: list[str] = []

    async def run(self, ctx: C) -> Outcome:
        """Run the steps in order; re-raises the failure after cleanup."""
        stack: list[Step[C]] = []
        outcome = Outcome.FAILED
        try:
            for step in self.steps:
                stack.append(step)
                self.started.append(step.name)
                await step.run(ctx)
            outcome = Outcome.SUCCEEDED
            return outcome
        except asyncio.CancelledError as exc:
            outcome = Outcome.DETACHED if DETACH in exc.args else Outcome.CANCELLED
            raise
        except Detach:
            outcome = Outcome.DETACHED
            raise
        finally:
            for step in reversed(stack):
                try:
                    await asyncio.shield(step.cleanup(ctx, outcome))
                except asyncio.CancelledError:
                    log.warning("cleanup of %s was interrupted", step.name)
                except Exception:
                    log.exception("cleanup of step %s failed", step.name)
