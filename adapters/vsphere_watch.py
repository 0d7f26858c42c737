"""Watch a VM until it has been powered on and then off; find the VM deployed from a template.

Both use a private PropertyCollector and ``WaitForUpdatesEx`` (no polling of
properties). The collector is recreated when the session was lost (vCenter drops a
session's collectors with it), so a watch survives session expiry; everything it
needs is in ``Published.resource`` so a restarted bot can resume it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime
from typing import Any

from adapters.base import AdapterError, NotFoundError, PlatformTimeoutError
from adapters.vsphere_power import power_watcher
from adapters.vsphere_session import VSphereSession

DEPLOY_EVENTS = ["VmDeployedEvent", "VmClonedEvent"]
POWER_ON_EVENTS = ["VmPoweredOnEvent", "DrsVmPoweredOnEvent", "VmStartingEvent"]


class _Stale(AdapterError):
    """Our PropertyCollector vanished with its session; build a new one."""


def _moid(obj: Any) -> str:
    return str(obj._moId)


def _deadline_error(what: str, timeout: float) -> PlatformTimeoutError:
    hours = timeout / 3600
    span = f"{hours:g} h" if hours >= 1 else f"{timeout:g} s"
    return PlatformTimeoutError(f"vSphere: waited {span} for {what}; the watch timed out "
                                f"(watch_timeout)")


async def _updates(session: VSphereSession, make_spec: Callable[[Any], Any], deadline: float,
                   wait_seconds: int, what: str, timeout: float,
                   watched: Callable[[], set[str]]) -> AsyncGenerator[tuple[Any, Any], None]:
    """Yield (object, property change) pairs until the caller stops or the deadline passes."""
    from pyVmomi import vmodl

    while True:
        def open_collector(si: Any) -> Any:
            pc = si.content.propertyCollector.CreatePropertyCollector()
            try:
                pc.CreateFilter(make_spec(si), partialUpdates=False)
            except vmodl.fault.ManagedObjectNotFound as exc:
                pc.DestroyPropertyCollector()
                if _moid(exc.obj) in watched():
                    raise NotFoundError(f"vSphere: {exc.obj._moId} was deleted while "
                                        f"waiting for {what}") from None
                raise
            return pc

        pc = await session.call(open_collector, "starting the watch")
        version = ""
        try:
            while True:
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise _deadline_error(what, timeout)
                wait = max(1, min(wait_seconds, int(remaining) + 1))

                def wait_once(si: Any, pc: Any = pc, version: str = version,
                              wait: int = wait) -> Any:
                    try:
                        return pc.WaitForUpdatesEx(
                            version, vmodl.query.PropertyCollector.WaitOptions(
                                maxWaitSeconds=wait))
                    except vmodl.fault.ManagedObjectNotFound as exc:
                        if _moid(exc.obj) == _moid(pc):
                            raise _Stale("collector lost") from None
                        if _moid(exc.obj) in watched():
                            raise NotFoundError(f"vSphere: {exc.obj._moId} was deleted "
                                                f"while waiting for {what}") from None
                        raise

                result = await session.call(wait_once, "watching the VM")
                if result is None:
                    continue
                version = result.version
                for filter_update in result.filterSet or []:
                    for update in filter_update.objectSet or []:
                        if update.kind == "leave" and _moid(update.obj) in watched():
                            raise NotFoundError(
                                f"vSphere: {update.obj._moId} was deleted while waiting "
                                f"for {what}")
                        for change in update.changeSet or []:
                            yield update.obj, change
        except _Stale:
            continue
        finally:
            await _close_collector(session, pc)


async def _close_collector(session: VSphereSession, pc: Any) -> None:
    def close(si: Any) -> None:
        for method in (pc.CancelWaitForUpdates, pc.DestroyPropertyCollector):
            try:
                method()
            except Exception:  # gone with an expired session: nothing to release
                continue

    await asyncio.shield(asyncio.to_thread(session.call_sync, close, "stopping the watch"))


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
                           on_powered_on: Callable[[], Awaitable[None]]) -> None:
    """Return once ``vm`` has been powered on and is now powered off.

    The VM is watched through the session's shared collector (:mod:`adapters.vsphere_power`),
    no thread of its own."""
    what = "the VM to be powered on and shut down"
    watcher = power_watcher(session, wait_seconds)
    announced = False
    last = None
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
            if report == last:  # the same state again (the read, then the collector's enter)
                continue
            last = report
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
    if source is not None and _moid(source) == template_id and event.vm is not None:
        return event.vm.vm
    return None


async def wait_for_deploy(session: VSphereSession, template: Any, *, since: datetime,
                          deadline: float, timeout: float, wait_seconds: int) -> Any:
    """The first VM deployed or cloned from ``template`` at or after ``since``."""
    from pyVmomi import vim

    template_id = _moid(template)

    def open_events(si: Any) -> Any:
        spec = vim.event.EventFilterSpec(
            eventTypeId=DEPLOY_EVENTS, time=vim.event.EventFilterSpec.ByTime(beginTime=since))
        collector = si.content.eventManager.CreateCollectorForEvents(spec)
        collector.SetCollectorPageSize(100)
        return collector

    def drain(si: Any, collector: Any) -> Any | None:
        while True:
            events = collector.ReadNextEvents(100)
            if not events:
                return None
            for event in events:
                found = _deployed_from(event, template_id)
                if found is not None:
                    return found

    state: dict[str, Any] = {}

    def make_spec(si: Any) -> Any:
        from pyVmomi import vmodl

        state["collector"] = open_events(si)
        pc = vmodl.query.PropertyCollector
        return pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=state["collector"], skip=False)],
            propSet=[pc.PropertySpec(type=vim.event.EventHistoryCollector,
                                     pathSet=["latestPage"])],
        )

    updates = _updates(session, make_spec, deadline, wait_seconds,
                       "a VM to be deployed from the template", timeout, lambda: {template_id})
    try:
        async with aclosing(updates):
            async for _obj, change in updates:
                for event in change.val or []:
                    found = _deployed_from(event, template_id)
                    if found is not None:
                        return found
                found = await session.call(lambda si: drain(si, state["collector"]),
                                           "reading events")
                if found is not None:
                    return found
    finally:
        collector = state.get("collector")
        if collector is not None:
            def destroy(si: Any) -> None:
                _destroy(collector)

            await asyncio.shield(asyncio.to_thread(session.call_sync, destroy, "closing events"))
    raise PlatformTimeoutError("vSphere: the event watch ended unexpectedly")


def _destroy(collector: Any) -> None:
    try:
        collector.DestroyCollector()
    except Exception:  # gone with an expired session
        return
