"""Which task a log record is about: ``task_id``, ``template`` and ``connector``.

A loop shared by many tasks (an adapter's power or event watcher) is started with
``detached_task``: started plainly, it would copy the context of the task that happened to
start it and name that task in every record it writes for the others.

The runner sets them (``task_context``) around all of one task's work. An asyncio task copies
the context when it is created and ``asyncio.to_thread`` runs its function in a copy, so every
record of that work carries them; a thread pool of one's own does not (``in_context`` hands it
the caller's context). The compositor's child process has none: its log lines come back on
its stderr and are logged by a reader task the job created, so they carry the job's fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported where a task starts one: every command's `--help` imports this module
    import asyncio

FIELDS = ("task_id", "template", "connector")
R = TypeVar("R")

_current: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "layerbot_task", default=None)


def fields(task_id: str, template: str, connector: str) -> dict[str, str]:
    return {"task_id": task_id, "template": template, "connector": connector}


def current() -> Mapping[str, str]:
    """The fields of the task whose work runs here ({} outside any task)."""
    return _current.get() or {}


@contextlib.contextmanager
def task_context(task_id: str, template: str, connector: str) -> Iterator[None]:
    token = _current.set(fields(task_id, template, connector))
    try:
        yield
    finally:
        _current.reset(token)


def in_context(call: Callable[..., R], *args: Any, **kwargs: Any) -> Callable[[], R]:
    """``call(*args, **kwargs)`` bound to a copy of this context, for another thread."""
    return functools.partial(contextvars.copy_context().run, call, *args, **kwargs)


def detached_task(coro: Coroutine[Any, Any, R], *, name: str | None = None) -> asyncio.Task[R]:
    """``asyncio.create_task`` for work that serves many tasks: it runs without task fields
    (every other context variable is copied as usual)."""
    import asyncio

    context = contextvars.copy_context()
    context.run(_current.set, None)
    return asyncio.create_task(coro, name=name, context=context)


class TaskFieldsFilter(logging.Filter):
    """Adds the task fields to every record a handler sees (None outside a task). A record
    given them by ``extra=`` (code that names a task outside its work) keeps those."""

    def filter(self, record: logging.LogRecord) -> bool:
        now = current()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, now.get(name))
        return True
