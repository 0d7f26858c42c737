"""Watch a VM until it has been powered on and then off; find the VM deployed from a template.

Neither holds a thread while it waits: the power watch goes through the session's shared
PropertyCollector (:mod:`adapters.vsphere.power`), the deploy watch reads new events in
short calls with back-off. Both survive session expiry, and everything they need is in
``Published.resource`` so a restarted bot can resume them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from adapters.base import Backoff, GuestTimeoutError
from adapters.retry import RetryPolicy
from adapters.vsphere.power import WATCH_RETRY, moid_of, power_watcher, quietly
from adapters.vsphere.session import VSphereSession

DEPLOY_EVENTS = ["VmDeployedEvent", "VmClonedEvent"]
POWER_ON_EVENTS = ["VmPoweredOnEvent", "DrsVmPoweredOnEvent", "VmStartingEvent"]


def _deadline_error(what: str, timeout: float) -> GuestTimeoutError:
    hours = timeout / 3600
    span = f"{hours:g} h" if hours >= 1 else f"{timeout:g} s"
    return GuestTimeoutError(f"vSphere: waited {span} for {what}; the watch timed out "
                                f"(watch_timeout)")


def was_powered_on(si: Any, vm: Any) -> bool:
    """True if vCenter's events show ``vm`` was powered on (for a resumed watch)."""
    from pyVmomi import vim

    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        eventTypeId=POWER_ON_EVENTS,
    )
    return bool(si.content.eventManager.QueryEvents(spec))


async def wait_power_cycle(session: VSphereSession, vm: Any, *, seen_on: bool, deadline: float,
                           timeout: float, wait_seconds: int,
                           on_powered_on: Callable[[], Awaitable[None]],
                           retry: RetryPolicy = WATCH_RETRY) -> None:
    """Return once ``vm`` has been powered on and is now powered off.

    The VM is watched through the session's shared collector (:mod:`adapters.vsphere.power`),
    no thread of its own."""
    what = "the VM to be powered on and shut down"
    watcher = power_watcher(session, wait_seconds, retry)
    announced = False
    async with watcher.watch(vm, what) as reports:
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise _deadline_error(what, timeout)
            try:
                # (not wait_for: on 3.11 it loses a cancel that coincides with a report)
                async with asyncio.timeout(remaining):
                    report = await reports.get()
            except TimeoutError:
                raise _deadline_error(what, timeout) from None
            if isinstance(report, BaseException):
                raise report
            # (no report is skipped as a repeat: "off" again after a rebuilt collector may
            # follow a power cycle no collector saw, during a vCenter outage)
            if report == "poweredOn":
                seen_on = True
                # also when the events already told (it was powered on before this watch
                # began): the task says the VM is running, and records it
                if not announced:
                    announced = True
                    await on_powered_on()
            elif report == "poweredOff":
                # Off, never seen on: was it powered on (and off) before this watch began, a
                # restarted bot or a quick guest? vCenter's events tell. Asked only now, after
                # the collector reported the state, so no power cycle falls between the two.
                if not seen_on:
                    seen_on = await session.call(lambda si: was_powered_on(si, vm),
                                                 "reading VM events")
                    if seen_on and not announced:  # it ran: recorded as a seen "on" would be
                        announced = True
                        await on_powered_on()
                # the first report (a read) and the collector's are not ordered: an "off"
                # may be older than the "on" before it; only the state now is sure
                if seen_on and await watcher.current(vm) == "poweredOff":
                    return


def _deployed_from(event: Any, template_id: str) -> Any | None:
    kind = type(event).__name__.rsplit(".", 1)[-1]
    source = None
    if kind == "VmDeployedEvent" and event.srcTemplate is not None:
        source = event.srcTemplate.vm
    elif kind == "VmClonedEvent" and event.sourceVm is not None:
        source = event.sourceVm.vm
    if source is not None and moid_of(source) == template_id and event.vm is not None:
        return event.vm.vm
    return None


async def wait_for_deploy(session: VSphereSession, template: Any, *, since: datetime,
                          deadline: float, timeout: float, wait_seconds: int) -> Any:
    """The first VM deployed or cloned from ``template`` at or after ``since``.

    Reads an EventHistoryCollector's new events in short calls, less and less often (up to
    every ``wait_seconds``) while none comes: hundreds of tasks may wait for a deploy, and a
    blocking wait would hold a thread each. The collector is recreated when the session was
    lost (vCenter drops it with the session); it reads again from ``since``."""
    from pyVmomi import vim, vmodl

    template_id = moid_of(template)
    what = "a VM to be deployed from the template"
    state: dict[str, Any] = {}

    def open_events(si: Any) -> Any:
        spec = vim.event.EventFilterSpec(
            eventTypeId=DEPLOY_EVENTS, time=vim.event.EventFilterSpec.ByTime(beginTime=since))
        collector = si.content.eventManager.CreateCollectorForEvents(spec)
        collector.SetCollectorPageSize(100)
        return collector

    def drain(si: Any) -> Any | None:
        if state.get("collector") is None:
            state["collector"] = open_events(si)
        while True:
            try:
                events = state["collector"].ReadNextEvents(100)
            except vmodl.fault.ManagedObjectNotFound:  # gone with a lost session
                state["collector"] = open_events(si)
                continue
            if not events:
                return None
            for event in events:
                found = _deployed_from(event, template_id)
                if found is not None:
                    return found

    backoff = Backoff(min(1.0, wait_seconds), max(1.0, wait_seconds))
    try:
        while True:
            found = await session.call(drain, "reading events")
            if found is not None:
                return found
            remaining = deadline - time.time()
            if remaining <= 0:
                raise _deadline_error(what, timeout)
            backoff.current = min(backoff.current, remaining)
            await backoff.sleep()
    finally:
        collector = state.get("collector")
        if collector is not None:
            await asyncio.shield(session.call(lambda si: quietly(collector.DestroyCollector),
                                              "closing events"))
