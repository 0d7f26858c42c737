"""The shared power watch against vcsim: it outlives a vCenter outage (retryable failures, a
lost session) within its retry budget, and leaves no collector, thread or registry entry."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import NotFoundError, PlatformError, PlatformTimeoutError, publish
from adapters.retry import RetryPolicy
from adapters.vsphere import Clients, power

from .conftest import Recorder, VcSim, connector, find_vms, run_task, watching_stub

pytestmark = pytest.mark.timeout(120)


class Outage:
    """Injected through ``Clients.connect``: while ``failures`` is positive, each
    WaitForUpdatesEx (the watch's and a rebuilt collector's first) fails as if vCenter were
    restarting."""

    def __init__(self) -> None:
        self.failures = 0
        self.failed = 0

    def __call__(self, method: str, result: Any) -> Any:
        if method == "WaitForUpdatesEx" and self.failures > 0:
            self.failures -= 1
            self.failed += 1
            raise ConnectionResetError("vCenter is restarting")
        return result


def make_adapter(sim: VcSim, outage: Outage, retry: RetryPolicy):  # type: ignore[no-untyped-def]
    cfg = config_model("vsphere").model_validate(connector(sim))
    return create(cfg, Clients(connect=watching_stub(outage), wait_seconds=1, watch_retry=retry))


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vsphere-watch")]


async def no_watch_threads() -> bool:
    for _ in range(50):
        if not watch_threads():
            return True
        await asyncio.sleep(0.1)
    return False


async def collector_exists(adapter: Any, pc: Any) -> bool:
    from pyVmomi import vmodl

    opts = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=0)
    try:
        await adapter.session.call(lambda si: pc.WaitForUpdatesEx("", opts), "probing a collector")
    except NotFoundError:
        return False
    return True


async def test_the_watch_outlives_a_vcenter_restart(vcsim: VcSim, vc_env: None,
                                                     raw_disk: Path) -> None:
    outage = Outage()
    adapter = make_adapter(vcsim, outage, RetryPolicy(attempts=100, budget=60, first_delay=0.2,
                                                      max_delay=0.5))
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "restart-watch"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    [watcher] = power.watchers()
    # vCenter restarts: its sessions are gone and the next waits (also of a rebuilt collector) fail
    vcsim.si().content.sessionManager.TerminateSession([adapter.session.session_key])
    outage.failures = 3
    for _ in range(100):  # the first collector, two that failed at once, the rebuilt one
        if watcher.collectors == 4:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    assert outage.failed == 3 and watcher.collectors == 4 and not watch.done()
    [vm] = find_vms(vcsim, "restart-watch")
    run_task(vcsim, vm.PowerOnVM_Task())
    run_task(vcsim, vm.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    assert adapter.session.logins == 2  # the rebuild logged in again through the session
    assert [pc for pc in watcher.made if await collector_exists(adapter, pc)] == []
    await adapter.close()


async def test_a_failure_past_the_budget_fails_the_watch(vcsim: VcSim, vc_env: None,
                                                         raw_disk: Path) -> None:
    outage = Outage()
    adapter = make_adapter(vcsim, outage, RetryPolicy(attempts=100, budget=1.5, first_delay=0.2,
                                                      max_delay=0.5))
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "lasting-outage"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    outage.failures = 1_000
    started = time.monotonic()
    with pytest.raises(PlatformTimeoutError, match="cannot reach the server: vCenter is restarting"):
        await asyncio.wait_for(watch, 15)
    assert outage.failed > 1 and time.monotonic() - started >= 1.0  # it retried first
    assert await no_watch_threads()
    assert [w for w in power.watchers() if w.session is adapter.session] == []
    await adapter.close()


async def test_the_last_watch_leaves_no_watcher_thread_or_collector(vcsim: VcSim, vc_env: None,
                                                                    raw_disk: Path) -> None:
    adapter = make_adapter(vcsim, Outage(), power.WATCH_RETRY)
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "one-watch"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    [vm] = find_vms(vcsim, "one-watch")
    run_task(vcsim, vm.PowerOnVM_Task())
    run_task(vcsim, vm.PowerOffVM_Task())
    await asyncio.wait_for(watch, 15)
    session = weakref.ref(adapter.session)
    assert await no_watch_threads()
    assert [w for w in power.watchers() if w.session is adapter.session] == []
    await adapter.close()
    del adapter, watch
    gc.collect()
    assert session() is None  # no registry entry keeps the session (and its watcher) alive


async def test_a_failing_first_watch_leaves_no_thread_or_collector(vcsim: VcSim,
                                                                   vc_env: None) -> None:
    from pyVmomi import vim

    adapter = make_adapter(vcsim, Outage(), power.WATCH_RETRY)
    stub = await adapter.session.call(lambda si: si._stub, "connecting")
    watcher = power.power_watcher(adapter.session, 1)
    with pytest.raises(NotFoundError, match="vm-999999 was deleted"):
        async with watcher.watch(vim.VirtualMachine("vm-999999", stub), "its power state"):
            pass
    assert await no_watch_threads()
    assert watcher.collectors == 1
    assert [pc for pc in watcher.made if await collector_exists(adapter, pc)] == []
    assert [w for w in power.watchers() if w.session is adapter.session] == []
    await adapter.close()


async def test_a_power_cycle_during_an_outage_ends_the_watch(vcsim: VcSim, vc_env: None,
                                                              raw_disk: Path) -> None:
    """No collector saw the VM on: the rebuilt collector's "off" (as before) is asked of the
    events, not skipped as a repeat."""
    outage = Outage()
    adapter = make_adapter(vcsim, outage, RetryPolicy(attempts=100, budget=60, first_delay=0.2,
                                                      max_delay=0.5))
    rec = Recorder()
    published = await publish(adapter, rec.context(raw_disk, "cycle-in-outage"))
    watch = asyncio.create_task(adapter.wait_for_shutdown(published, rec.context(raw_disk, "x")))
    await asyncio.sleep(0.5)
    [watcher] = power.watchers()
    outage.failures = 1_000
    for _ in range(100):  # failing: the collector was dropped and cannot be rebuilt
        if outage.failed >= 2:
            break
        await asyncio.sleep(0.1)
    assert outage.failed >= 2 and watcher._pc is None
    [vm] = find_vms(vcsim, "cycle-in-outage")
    run_task(vcsim, vm.PowerOnVM_Task())
    run_task(vcsim, vm.PowerOffVM_Task())
    outage.failures = 0
    await asyncio.wait_for(watch, 15)
    await adapter.close()


async def test_an_unexpected_watch_error_reaches_each_task_as_its_own(
        vcsim: VcSim, vc_env: None, raw_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter(vcsim, Outage(), power.WATCH_RETRY)
    release = asyncio.Event()

    async def broken(self: power.PowerWatcher, pc: Any, version: str) -> Any:
        await release.wait()
        raise KeyError("filterSet")

    rec = Recorder()
    published = [await publish(adapter, rec.context(raw_disk, f"broken-{i}")) for i in range(2)]
    monkeypatch.setattr(power.PowerWatcher, "_wait", broken)
    watches = [asyncio.create_task(adapter.wait_for_shutdown(p, rec.context(raw_disk, "x")))
               for p in published]
    for _ in range(100):
        if [w.watched for w in power.watchers()] == [2]:
            break
        await asyncio.sleep(0.1)
    release.set()
    errors = await asyncio.wait_for(asyncio.gather(*watches, return_exceptions=True), 15)
    assert all(isinstance(e, PlatformError) and str(e).endswith("failed: 'filterSet' is missing")
               for e in errors), errors
    assert errors[0] is not errors[1]
    assert await no_watch_threads()
    await adapter.close()
