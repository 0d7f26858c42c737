"""What the task message shows of a task's progress, read from its events: the step ("Step 2
of 3 · Uploading to VMware vSphere") and one overall percentage that never goes back.

A task's own ``progress`` is per stage (compositing runs to 100 %, then uploading starts at
0 %) and a resumed task composites again; the overall figure is the highest the task has
reached, so it reads the same whichever process renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.store import states
from bot.store.interface import Store
from bot.store.model import Event, Task
from bot.store.states import EventKind

#: The step of each working status, for events written before steps were numbered.
_STEP_OF = {states.COMPOSITING: 1, states.UPLOADING: 2, states.ACTION_REQUIRED: 3}
_STEP_KINDS = (EventKind.STAGE, EventKind.WAITING)


@dataclass(frozen=True)
class TaskView:
    #: 0 while queued
    step: int
    steps: int
    #: what the step does, as its event said ("Uploading to Local folder")
    stage: str
    #: 0-100 over all steps, never lower than before
    percent: float
    #: why it failed, from its failed event's data (Slack words: no paths); None: the task's error
    error: str | None = None


def _overall(step: int, steps: int, fraction: float) -> float:
    if step <= 0 or steps <= 0:
        return 0.0
    return min(100.0, (step - 1 + max(0.0, min(fraction, 1.0))) / steps * 100)


def _legacy_step(event: Event, previous: int) -> int:
    """The step of an event written before steps were numbered."""
    if event.kind == EventKind.WAITING:
        return 3
    return 1 if previous == 0 else 2


def task_view(task: Task, events: Sequence[Event] = ()) -> TaskView:
    step = 0
    steps = 0
    stage = ""
    fraction = 0.0
    best = 0.0
    error: str | None = None
    for event in events:
        if event.kind == EventKind.FAILED and event.data.get("reason"):
            error = str(event.data["reason"])
        if event.kind in _STEP_KINDS:
            step = int(event.data.get("step") or _legacy_step(event, step))
            steps = int(event.data.get("steps") or max(steps, step, 2))
            stage, fraction = event.message, 0.0
        elif event.kind == EventKind.PROGRESS:
            fraction = float(event.data.get("percent") or 0.0) / 100
        elif event.kind == EventKind.GUEST:
            fraction = float(event.data.get("fraction") or 0.0)
        best = max(best, _overall(step, steps, fraction))
    if step == 0 and task.status in _STEP_OF:  # no events at hand: the status tells the step
        step = _STEP_OF[task.status]
        steps = max(step, 2)
        stage = task.stage
    if task.status in (states.COMPOSITING, states.UPLOADING) and step:
        best = max(best, _overall(step, steps, task.progress / 100))
    if task.status == states.DONE:
        best = 100.0
    return TaskView(step=step, steps=steps, stage=stage, percent=best, error=error)


def task_views(store: Store, tasks: Sequence[Task]) -> dict[str, TaskView]:
    """The view of each task, for a list (blocking: store calls). A finished task's line
    shows no progress, so only working ones read their events."""
    return {t.id: task_view(t, store.events(t.id) if not t.finished else ()) for t in tasks}
