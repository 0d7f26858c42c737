"""The job runner: claims tasks from the shared store and works them, renewing their
leases while it works.

``max_parallel`` bounds the expensive stages (compose, upload): a task holds one of those
slots from its claim until it starts waiting for its guest. Waiting costs no slot, so any
number of tasks wait at once, each an asyncio task (no thread), and one statement renews
the leases of all of them.

Several runners (``layerbot serve``, ``layerbot publish``, ``layerbot worker``) may
share one database: a task is claimed with one atomic UPDATE, so it is worked by
one runner at a time; a runner that dies stops renewing its lease and another one
resumes the task from its last completed stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from adapters.base import AdapterError, removal_problems
from adapters.steps import StepRunner, cancel, detach, is_detach
from bot import logcontext, messages, metrics
from bot.catalog import Catalog
from bot.runner.task_steps import Job, TaskConfigError, build_job, remove_partial, remove_staging, steps_for
from bot.store import states
from bot.store.interface import Store
from bot.store.model import LeaseLost, StoreUnavailable, Task
from bot.store.states import EventKind
from bot.store.wakeups import CANCEL_NOTICE, TASKS_CHANNEL, wait_or_timeout
from compositor import CompositorError, sweep_stale
from compositor.errors import LayerError
from compositor.scratch import ram_root

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Errors whose message is shown as is; anything else is reported by its type too.
_USER_ERRORS = (AdapterError, CompositorError, TaskConfigError)


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000) % 100000}"


def failure_data(exc: BaseException) -> dict[str, Any]:
    """For the FAILED event: the error's class tells Slack what to advise (none: unexpected)."""
    return {"error_class": type(exc).__name__ if isinstance(exc, _USER_ERRORS) else None}


def failure_reason(exc: BaseException, task_id: str = "") -> str:
    """A sentence the requester can act on. An unexpected error's text (a Python exception, a
    temporary file) is not for them: it is logged with its traceback under a short reference
    that the message gives instead."""
    if isinstance(exc, LayerError):  # layers may sit on a share another machine has mounted
        return f"{exc} (on {socket.gethostname()})"
    if isinstance(exc, _USER_ERRORS):
        return str(exc)
    reference = secrets.token_hex(3)
    log.error("task %s: unexpected error, reference %s", task_id or "?", reference, exc_info=exc)
    return messages.unexpected_failure(reference)


class JobRunner:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        owner: str | None = None,
        max_parallel: int | None = None,
        poll_interval: float = 0.5,
        clients: Mapping[str, object] | None = None,
        tags: Collection[str] = (),
    ) -> None:
        self.store = store
        #: this runner takes only tasks whose runner_tags are all among these
        self.tags = frozenset(tags)
        #: connector type -> the client factory its adapters get (None: the platform SDK's)
        self.clients = dict(clients or {})
        self.catalog = catalog
        self.owner = owner or runner_id()
        self.max_parallel = max_parallel or catalog.runner.max_parallel
        self.lease_seconds = catalog.runner.lease_seconds
        self.max_attempts = catalog.runner.max_attempts
        self.poll_interval = poll_interval
        self._jobs: dict[str, asyncio.Task[None]] = {}
        #: tasks in compose/upload, each holding one of the max_parallel slots
        self._working: set[str] = set()
        #: tasks whose lease this runner holds and renews
        self._leased: set[str] = set()
        #: when each held lease was last extended (time.monotonic() before the call)
        self._renewed_at: dict[str, float] = {}
        #: the fencing token (lease_generation) each held task was claimed with
        self._fences: dict[str, int] = {}
        #: the log fields of each held task, for records about it from outside its job
        self._log_fields: dict[str, dict[str, str]] = {}
        self._cancel_sent: set[str] = set()
        #: jobs told to let go because their lease could not be renewed: no crash, so their
        #: release gives the attempt back; renewals go on while they finish a cleanup
        self._letting_go: set[str] = set()
        self._wake = asyncio.Event()
        #: a cancel was requested somewhere: renew (which tells cancels) without waiting
        self._renew_now = asyncio.Event()
        #: set once the store's wake-ups are listened to (at once on a polling-only store)
        self.listening = asyncio.Event()
        self._stopping = False
        self._store_threads: ThreadPoolExecutor | None = None

    async def _store(self, call: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run a store call in the runner's own threads: renewals and claims must not queue
        behind file copies and SDK calls in the default executor."""
        if self._store_threads is None:
            self._store_threads = ThreadPoolExecutor(2, thread_name_prefix="layerbot-store")
        return await asyncio.get_running_loop().run_in_executor(
            self._store_threads, logcontext.in_context(call, *args, **kwargs))

    def wake(self) -> None:
        """A task was queued in this process: look for work now."""
        self._wake.set()

    @property
    def busy(self) -> int:
        """Tasks in compose/upload (at most max_parallel)."""
        return len(self._working)

    @property
    def waiting(self) -> int:
        """Tasks waiting for their guest."""
        return len(self._jobs) - len(self._working)

    async def run(self, *, only: Collection[str] | None = None, stop: asyncio.Event | None = None,
                  until_done: bool = False) -> None:
        """Claim and work tasks until ``stop`` is set, or (``until_done``) until every
        task in ``only`` is finished."""
        settings = self.catalog.runner
        swept = await asyncio.to_thread(
            sweep_stale, settings.work_dir, settings.cache_dir,
            ram_root=ram_root(settings.ram_scratch_dir) if settings.ram_scratch else None)
        if swept:
            log.info("removed %d files left by runners that died: %s", len(swept), swept)
        keeper = asyncio.create_task(self._keep_leases(), name="leases")
        listener = asyncio.create_task(self._listen(), name="wake-ups")
        stopping = asyncio.create_task(stop.wait() if stop else asyncio.Event().wait())
        stopping.add_done_callback(lambda _: self._wake.set())  # stop now, not at the next poll
        try:
            while not (stop and stop.is_set()):
                # cleared before looking, not after: a job that ends (or a notice that comes)
                # while _fill runs must wake the next look, not wait for the poll
                self._wake.clear()
                try:
                    await self._fill(only)
                    if until_done and only is not None and await self._all_finished(only):
                        break
                except StoreUnavailable as exc:  # polling again reconnects once it is back
                    log.warning("%s; trying again in %.1f s", exc, self.poll_interval)
                await wait_or_timeout(self._wake, self.poll_interval)
        finally:
            try:
                await self.shutdown()
            finally:
                for helper in (keeper, listener, stopping):
                    helper.cancel()
                await asyncio.gather(keeper, listener, stopping, return_exceptions=True)
                if self._store_threads is not None:
                    # a renewal stuck on a locked database is abandoned, not waited for
                    self._store_threads.shutdown(wait=False)
                    self._store_threads = None

    async def _listen(self) -> None:
        """Wake the claim loop when a task is queued or released, the lease keeper when a
        cancel is requested (PostgreSQL); polling stays the fallback."""
        def on_notice(payload: str) -> None:
            if payload == CANCEL_NOTICE:
                self._renew_now.set()
            else:  # queued, released, or a reconnection that may have missed either
                self._wake.set()

        try:
            await self.store.listen(TASKS_CHANNEL, on_notice, on_ready=self.listening.set)
        finally:
            self.listening.set()  # a store without notifications: polling only

    async def _all_finished(self, ids: Collection[str]) -> bool:
        if self._jobs:
            return False
        tasks = await self._store(lambda: [self.store.get(i) for i in ids])
        return all(t.finished for t in tasks)

    async def _fill(self, only: Collection[str] | None) -> None:
        while not self._stopping:
            slot_free = len(self._working) < self.max_parallel
            asked_at = time.monotonic()
            # never a task this runner still works, even if its lease ran out meanwhile
            task = await self._store(self.store.claim, self.owner, self.lease_seconds, only,
                                     published_only=not slot_free, exclude=list(self._jobs),
                                     tags=self.tags)
            if task is None:
                return
            self._leased.add(task.id)
            self._fences[task.id] = task.lease_generation
            self._log_fields[task.id] = logcontext.fields(task.id, task.template, task.connector)
            self._renewed_at[task.id] = asked_at
            if task.published is None:
                self._working.add(task.id)
            job = asyncio.create_task(self._work(task), name=f"task-{task.id}")
            self._jobs[task.id] = job
            job.add_done_callback(functools.partial(self._finished, task.id))

    def _waiting(self, task_id: str) -> None:
        """The task waits for its guest now: its compose/upload slot is free."""
        if task_id in self._working:
            self._working.discard(task_id)
            self._wake.set()

    def _finished(self, task_id: str, job: asyncio.Task[None]) -> None:
        if self._jobs.get(task_id) is not job:
            return  # (defensive) a newer job of the task is not this one's to forget
        del self._jobs[task_id]
        self._working.discard(task_id)
        self._cancel_sent.discard(task_id)
        self._letting_go.discard(task_id)
        self._renewed_at.pop(task_id, None)
        self._fences.pop(task_id, None)
        self._log_fields.pop(task_id, None)
        self._wake.set()

    async def shutdown(self) -> None:
        """Stop working: detach every job, leaving its task for another runner."""
        self._stopping = True
        jobs = list(self._jobs.values())
        for job in jobs:
            detach(job)
        await asyncio.gather(*jobs, return_exceptions=True)

    # ------------------------------------------------------------ one task
    async def _work(self, task: Task) -> None:
        # this asyncio task's own context: whatever it starts or logs names the task
        with logcontext.task_context(task.id, task.template, task.connector):
            await self._work_in_context(task)

    async def _work_in_context(self, task: Task) -> None:
        log.info("claimed %s (attempt %d, status %s)", task.id, task.attempts, task.status)
        stopped_cleanly = False
        try:
            if task.attempts > self.max_attempts:
                await self._fail(task, messages.too_many_attempts(task.attempts - 1))
            else:
                await self._run_job(task)
        except asyncio.CancelledError as exc:
            if not is_detach(exc):
                raise
            stopped_cleanly = self._stopping or task.id in self._letting_go
        except LeaseLost:
            log.warning("task %s: lease lost, another runner has it", task.id)
        except StoreUnavailable as exc:
            # no verdict from a passing outage: the task resumes from its stage once its lease
            # runs out, here or on another runner
            log.warning("task %s: left for later: %s", task.id, exc)
        except Exception as exc:
            # Never release a task that broke this way without a verdict: it would be
            # claimed again at once, forever. (failure_reason logs it, traceback and reference,
            # once; a known error is logged here without one.)
            if isinstance(exc, _USER_ERRORS):
                log.warning("task %s failed: %s", task.id, exc)
            with contextlib.suppress(LeaseLost):
                await self._fail(task, failure_reason(exc, task.id), failure_data(exc))
        finally:
            self._leased.discard(task.id)  # renewals stop before the release
            try:
                await self._store(self.store.release, task.id, self.owner,
                                  count_attempt=not stopped_cleanly, fence=task.lease_generation)
                log.debug("released %s", task.id)
            except StoreUnavailable as exc:
                log.warning("task %s: not released (its lease runs out instead): %s", task.id, exc)

    async def _keep_leases(self) -> None:
        """Renew every held lease in one statement; detach a job whose lease another runner
        took, or could not be renewed for so long that it runs out; cancel one whose cancel
        was requested."""
        period = min(self.lease_seconds / 3, 1.0)
        loop = asyncio.get_running_loop()
        #: the renewal under way: its future, the jobs it renews, when it was asked
        pending: tuple[asyncio.Future[dict[str, bool]], dict[str, asyncio.Task[None]], float] | None = None
        try:
            while True:
                await wait_or_timeout(self._renew_now, period)
                self._renew_now.clear()
                if pending is None:
                    held = {t: self._jobs[t] for t in self._leased if t in self._jobs}
                    fences = {t: self._fences.get(t) for t in held}
                    call = self._store(self.store.renew_held, self.owner, fences, self.lease_seconds)
                    pending = (loop.create_task(call), held, time.monotonic())
                # a renewal stuck on a locked database stays pending; the deadlines still count
                done, _ = await asyncio.wait([pending[0]], timeout=period)
                if done:
                    renewal, held, asked_at = pending
                    pending = None
                    try:
                        self._renewed(renewal.result(), held, asked_at)
                    except StoreUnavailable as exc:
                        log.warning("renewing the leases failed: %s", exc)
                    except Exception:  # a locked database: try again next round
                        log.exception("renewing the leases failed")
                self._let_go_of_expiring(margin=min(2 * period, self.lease_seconds / 3))
        finally:
            if pending is not None:
                pending[0].cancel()

    def _renewed(self, renewed: dict[str, bool], held: dict[str, asyncio.Task[None]],
                 asked_at: float) -> None:
        for task_id, job in held.items():
            if task_id not in self._leased or self._jobs.get(task_id) is not job:
                continue  # the job let go meanwhile
            if task_id not in renewed:
                log.warning("task %s: lease lost, another runner has it", task_id,
                            extra=self._log_fields.get(task_id))
                self._leased.discard(task_id)
                detach(job)
                continue
            self._renewed_at[task_id] = max(self._renewed_at.get(task_id, asked_at), asked_at)
            if renewed[task_id] and task_id not in self._cancel_sent:
                self._cancel_sent.add(task_id)
                cancel(job)

    def _let_go_of_expiring(self, margin: float) -> None:
        """Detach the jobs whose lease runs out within ``margin``: another runner may take the
        task then, and two runners must not work it at once. The lease stays in the renewals
        until the job has ended: a job finishing a shielded cleanup still holds its task."""
        now = time.monotonic()
        for task_id in list(self._leased):
            job = self._jobs.get(task_id)
            renewed_at = self._renewed_at.get(task_id, now)
            if job is None or task_id in self._letting_go \
                    or now - renewed_at + margin < self.lease_seconds:
                continue
            log.warning("task %s: lease not renewed for %.0f s, letting go of it before it runs out",
                        task_id, now - renewed_at, extra=self._log_fields.get(task_id))
            self._letting_go.add(task_id)
            detach(job)

    async def _fail(self, task: Task, reason: str, data: dict[str, Any] | None = None) -> None:
        await self._store(
            self.store.update, task.id, self.owner, fence=task.lease_generation,
            status=states.FAILED, error=reason,
            event=(EventKind.FAILED, messages.failed(reason, [])), data={"reason": reason, **(data or {})})
        metrics.count_task_finished(task.platform or "", states.FAILED)
        self._leased.discard(task.id)  # the lease went with the verdict: no renewal misses it

    async def _run_job(self, task: Task) -> None:
        try:
            job = build_job(task, self.store, self.owner, self.catalog,
                            on_waiting=lambda: self._waiting(task.id),
                            on_finished=lambda: self._leased.discard(task.id), clients=self.clients)
        except Exception as exc:  # the catalog changed, or the adapter cannot be set up
            await self._fail(task, failure_reason(exc, task.id), failure_data(exc))
            return
        try:
            await self._run_steps(job)
        finally:
            await job.adapter.close()

    async def _run_steps(self, job: Job) -> None:
        task = job.task
        if task.cancel_requested:  # seen at claim time (a restart, a takeover)
            if job.published is not None:  # as when the holding runner sees it: kept
                await remove_staging(job)
            else:
                await remove_partial(job)
            await job.update(status=states.CANCELLED,
                             event=(EventKind.CANCELLED, self._cancelled_message(job)),
                             data=self._cancelled_data(job))
            return
        if task.status == states.UPLOADING and job.resources and job.published is None:
            if await remove_partial(job, keep_resumable=True):
                # carrying on would orphan it: the platform's reason goes to the user
                problems = removal_problems(job.removed)
                reason = messages.resume_cleanup_failed(problems)
                # the details (paths, the platform's words) are for the CLI and the log; the
                # data Slack renders from has only counts
                await job.update(status=states.FAILED, error=reason,
                                 event=(EventKind.FAILED, messages.failed(reason, [])),
                                 data={"removed": job.removed, "not_removed": len(problems),
                                       "reason": messages.resume_cleanup_failed_briefly(
                                           len(problems), task.id)})
                return
            await job.add_event(EventKind.RESUMED, messages.resumed_cleanup(job.removed),
                                {"removed": job.removed, "not_removed": 0})
            job.removed = []
        if job.published is not None:
            await remove_staging(job)
        try:
            await StepRunner(steps_for(job)).run(job)
        except asyncio.CancelledError as exc:
            if is_detach(exc):
                raise
            await job.update(status=states.CANCELLED, error="cancelled",
                       event=(EventKind.CANCELLED, self._cancelled_message(job)),
                       data=self._cancelled_data(job))
            return
        except (LeaseLost, StoreUnavailable):
            raise
        except Exception as exc:
            log.info("task %s failed: %s", task.id, type(exc).__name__)
            reason = failure_reason(exc, task.id)
            await job.update(status=states.FAILED, error=reason,
                       event=(EventKind.FAILED, messages.failed(reason, job.removed)),
                       data={"removed": job.removed, "reason": reason,
                             "not_removed": len(removal_problems(job.removed)), **failure_data(exc)})
            return
        elapsed = time.time() - task.created_at
        await job.update(status=states.DONE, progress=100.0, stage="done",
                   event=(EventKind.DONE, messages.done(elapsed)),
                   data={"elapsed": elapsed, "runner": self.owner})

    @staticmethod
    def _cancelled_data(job: Job) -> dict[str, Any]:
        return {"removed": job.removed, "not_removed": len(removal_problems(job.removed)),
                "kept": job.published.summary if job.published else None}

    @staticmethod
    def _cancelled_message(job: Job) -> str:
        return messages.cancelled(job.removed, job.published.summary if job.published else None)
