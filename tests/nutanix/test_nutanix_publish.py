"""The nutanix adapter against the Prism double: publish, the power watch, Prism's errors,
the upload cut off, cancel, a restart during the watch, and the settings checked at load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters import resources
from adapters.base import AuthError, NotFoundError, PlatformError, Published, publish
from adapters.nutanix import NutanixPoweredOn, NutanixPublished, NutanixVm
from adapters.nutanix.prism_errors import SpecVersionConflict, TaskFailed
from adapters.nutanix.prism_watch import EndpointWatch, endpoint_watch
from adapters.resources import Resource
from adapters.steps import cancel

from .conftest import PASSWORD, connector, context, make_adapter, qcow2_disk
from .prism_double import PrismDouble

pytestmark = pytest.mark.timeout(60)


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def vm_uuid(prism: PrismDouble, name: str) -> str:
    [uuid] = [u for u, vm in prism.vms.items() if vm["spec"]["name"] == name]
    return uuid


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return qcow2_disk(tmp_path / "disk.qcow2")


@pytest.fixture
def ca_file(prism_ca: Any) -> Path:
    return prism_ca[1]  # type: ignore[no-any-return]


async def test_publish_then_power_on_and_off_is_done(prism: PrismDouble, ca_file: Path,
                                                     disk: Path) -> None:
    adapter = make_adapter(prism, ca_file)
    other = make_adapter(prism, ca_file)
    assert adapter.disk_format() == "qcow2"
    notes: list[tuple[float, str]] = []
    try:
        ctx = context(disk, "win10-20260101-000000", notes)
        published = await publish(adapter, ctx)
        [(image_uuid, sent, virtual)] = prism.uploads
        assert sent == disk.stat().st_size and virtual == 4 << 20
        assert any("uploading image" in n and "MiB" in n for _, n in notes)
        [vm] = prism.vms.values()
        spec = vm["spec"]["resources"]
        assert vm["status"]["resources"]["power_state"] == "OFF"
        assert spec["disk_list"][0]["data_source_reference"] == {"kind": "image", "uuid": image_uuid}
        assert spec["disk_list"][0]["storage_config"]["storage_container_reference"]["uuid"] == (
            "8a77ce4a-5730-44ea-a281-4c81b1277333")
        assert spec["nic_list"][0]["subnet_reference"]["uuid"] == "b2e46975-2cde-4a49-9dda-815eb4fcd679"
        assert spec["boot_config"] == {"boot_type": "UEFI"}
        vm_uuid = vm["metadata"]["uuid"]
        assert published.link == f"{prism.url}/console/#page/explore/s/vms/{vm_uuid}/summary"
        assert prism.images == {}  # staging: deleted once the disk was cloned
        assert [type(r) for r in ctx.resources] == [NutanixVm]  # the VM stays
        assert adapter.next_steps(published).startswith(
            "The virtual machine win10-20260101-000000 is created, but off. Power it on")
        assert PASSWORD not in repr(published.to_json())

        # a second task waits on the same Prism: one listing per round serves both
        ctx2 = context(disk, "win10-second")
        second = await publish(other, ctx2)
        lists_before = prism.calls["POST /api/nutanix/v3/{kind}s/list"]
        waits = [asyncio.create_task(adapter.wait_for_shutdown(published, ctx)),
                 asyncio.create_task(other.wait_for_shutdown(second, ctx2))]
        await until(lambda: (w := endpoint_watch(adapter.config)) is not None
                    and len(w.waiting) == 2 and w.rounds >= 1, "both tasks waiting and a round")
        watch = endpoint_watch(adapter.config)
        assert watch is not None
        assert 1 <= prism.calls["POST /api/nutanix/v3/{kind}s/list"] - lists_before <= watch.rounds
        prism.power(vm_uuid, "ON")
        while not any(isinstance(r, NutanixPoweredOn) for r in ctx.resources):
            await asyncio.sleep(0.02)
        assert not waits[0].done()
        prism.power(vm_uuid, "OFF")
        await asyncio.wait_for(waits[0], 10)
        assert not waits[1].done()
        waits[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waits[1]
        assert endpoint_watch(adapter.config) is None  # gone with the last wait
    finally:
        await adapter.close()
        await other.close()


async def test_a_task_joining_while_a_round_is_in_flight_waits_for_the_next_round(
        prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    first, second = make_adapter(prism, ca_file), make_adapter(prism, ca_file)
    try:
        ctx1, ctx2 = context(disk, "win10-early"), context(disk, "win10-late")
        published1, published2 = await publish(first, ctx1), await publish(second, ctx2)
        hold = prism.hold_lists = asyncio.Event()
        early = asyncio.create_task(first.wait_for_shutdown(published1, ctx1))
        await until(lambda: prism.held_lists == 1, "a round in flight")
        late = asyncio.create_task(second.wait_for_shutdown(published2, ctx2))
        watch = endpoint_watch(first.config)
        assert watch is not None
        await until(lambda: len(watch.waiting) == 2, "the second task waiting")
        prism.hold_lists = None
        hold.set()
        await until(lambda: watch.rounds >= 2 or late.done(), "the round after the held one")
        assert not late.done() and not early.done()  # the held round did not look for win10-late
        uuid = vm_uuid(prism, "win10-late")
        prism.power(uuid, "ON")
        await until(lambda: any(isinstance(r, NutanixPoweredOn) for r in ctx2.resources), "ON")
        prism.power(uuid, "OFF")
        await asyncio.wait_for(late, 10)
        early.cancel()
        await asyncio.gather(early, return_exceptions=True)
    finally:
        await first.close()
        await second.close()


async def test_an_unexpected_watch_error_reaches_each_waiting_task_as_its_own(
        prism: PrismDouble, ca_file: Path, disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = make_adapter(prism, ca_file), make_adapter(prism, ca_file)
    release = asyncio.Event()

    async def broken(self: EndpointWatch) -> tuple[frozenset[str], dict[str, str]]:
        await release.wait()
        raise KeyError("entities")
    try:
        ctx1, ctx2 = context(disk, "win10-one"), context(disk, "win10-two")
        published1, published2 = await publish(first, ctx1), await publish(second, ctx2)
        monkeypatch.setattr(EndpointWatch, "one_round", broken)
        waits = [asyncio.create_task(first.wait_for_shutdown(published1, ctx1)),
                 asyncio.create_task(second.wait_for_shutdown(published2, ctx2))]
        await until(lambda: (w := endpoint_watch(first.config)) is not None and len(w.waiting) == 2,
                    "both tasks waiting")
        release.set()
        errors = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)
        assert all(isinstance(e, PlatformError) and str(e).endswith("failed: 'entities' is missing")
               for e in errors), errors
        assert errors[0] is not errors[1]
        assert endpoint_watch(first.config) is None
    finally:
        await first.close()
        await second.close()


async def test_keep_image_and_vm_template(prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    prism.add_vm("win10-gold", {"num_sockets": 2, "num_vcpus_per_socket": 2,
                                "memory_size_mib": 8192, "power_state": "OFF",
                                "boot_config": {"boot_type": "SECURE_BOOT"}})
    adapter = make_adapter(prism, ca_file, keep_image=True, vm_template="win10-gold")
    try:
        ctx = context(disk, "win10-kept")
        await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert len(prism.images) == 1 and [type(r) for r in ctx.resources] == [NutanixVm]
    [made] = [vm for vm in prism.vms.values() if vm["spec"]["name"] == "win10-kept"]
    res = made["spec"]["resources"]
    assert (res["num_sockets"], res["memory_size_mib"]) == (4, 8192)
    assert res["boot_config"]["boot_type"] == "SECURE_BOOT"


async def test_wrong_credentials_are_an_auth_error_without_the_password(
        prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    prism.password = "another-password"
    adapter = make_adapter(prism, ca_file)
    try:
        with pytest.raises(AuthError, match="HTTP 401 AUTHENTICATION_REQUIRED: Authentication "
                                            "required") as caught:
            await publish(adapter, context(disk, "win10-auth"))
    finally:
        await adapter.close()
    assert PASSWORD not in str(caught.value)
    assert prism.images == {} and prism.vms == {}


@pytest.mark.parametrize(("key", "value"), [("cluster", "ahv-9"), ("container", "gold-ctr"),
                                            ("subnet", "vlan999")])
async def test_a_missing_cluster_container_or_subnet_is_named(
        prism: PrismDouble, ca_file: Path, disk: Path, key: str, value: str) -> None:
    adapter = make_adapter(prism, ca_file, **{key: value})
    ctx = context(disk, "win10-missing")
    try:
        with pytest.raises(NotFoundError, match=f"{key} '{value}' does not exist.*"
                                                f"connector setting {key}"):
            await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert prism.images == {} and prism.vms == {} and ctx.resources == []


async def test_a_task_failing_mid_way_keeps_its_detail_and_removes_vm_and_image(
        prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    prism.fail_task["create_vm"] = "Failed to clone the disk: storage container is full"
    adapter = make_adapter(prism, ca_file)
    ctx = context(disk, "win10-fail")
    try:
        with pytest.raises(TaskFailed, match=r"creating VM win10-fail: task .* FAILED: Failed to "
                                             r"clone the disk: storage container is full"):
            await publish(adapter, ctx)
    finally:
        await adapter.close()
    assert prism.images == {} and prism.vms == {} and ctx.resources == []
    assert [line.split(" (")[0] for line in ctx.removed] == ["Nutanix VM win10-fail",
                                                            "Nutanix image win10-fail"]


async def test_an_upload_cut_off_is_sent_again_whole(prism: PrismDouble, ca_file: Path,
                                                     disk: Path) -> None:
    prism.cut_upload_after = 1 << 19
    adapter = make_adapter(prism, ca_file)
    try:
        await publish(adapter, context(disk, "win10-cut"))
    finally:
        await adapter.close()
    [(_, sent, _)] = prism.uploads
    assert sent == disk.stat().st_size and prism.calls["PUT /api/nutanix/v3/images/{uuid}/file"] == 2


async def test_cancel_during_the_upload_leaves_nothing(prism: PrismDouble, ca_file: Path,
                                                       disk: Path) -> None:
    adapter = make_adapter(prism, ca_file)
    job: list[asyncio.Task[Published]] = []

    async def stop(fraction: float, note: str) -> None:
        if "uploading" in note and job:
            cancel(job[0])

    ctx = context(disk, "win10-cancel")
    ctx.progress = stop
    try:
        job.append(asyncio.create_task(publish(adapter, ctx)))
        with pytest.raises(asyncio.CancelledError):
            await job[0]
    finally:
        await adapter.close()
    assert prism.images == {} and prism.vms == {} and prism.uploads == []
    assert ctx.resources == [] and ctx.removed


async def test_a_restart_during_the_watch_resumes_and_is_done_once(
        prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    first = make_adapter(prism, ca_file)
    stored: list[list[Resource]] = []
    ctx = context(disk, "win10-restart", stored=stored)
    published = await publish(first, ctx)
    [uuid] = prism.vms
    watch = asyncio.create_task(first.wait_for_shutdown(published, ctx))
    prism.power(uuid, "ON")
    while not any(isinstance(r, NutanixPoweredOn) for r in stored[-1]):
        await asyncio.sleep(0.02)
    watch.cancel()  # the runner goes down while the guest runs its scripts
    with pytest.raises(asyncio.CancelledError):
        await watch
    await first.close()
    prism.power(uuid, "OFF")  # ...and the guest shuts down meanwhile

    again = make_adapter(prism, ca_file)
    recorded = resources.load(resources.dump(stored[-1]), where="test")
    restored = Published.from_json(published.to_json())
    later = context(disk, "win10-restart", resources=recorded, stored=stored)
    try:
        await asyncio.wait_for(again.wait_for_shutdown(restored, later), 10)
    finally:
        await again.close()
    assert restored.expect(NutanixPublished).uuid == uuid
    assert [r for r in later.resources if isinstance(r, NutanixPoweredOn)] == [
        NutanixPoweredOn(uuid=uuid)]  # recorded once, by the first runner


async def test_a_stale_spec_version_is_a_conflict_keeping_prisms_message(
        prism: PrismDouble, ca_file: Path, disk: Path) -> None:
    adapter = make_adapter(prism, ca_file)
    try:
        await publish(adapter, context(disk, "win10-409"))
        [uuid] = prism.vms
        vm = await adapter.prism.call("GET", f"/vms/{uuid}", doing="reading")
        body = {"metadata": vm["metadata"], "spec": vm["spec"]}
        body["spec"]["resources"]["power_state"] = "ON"
        await adapter.prism.call("PUT", f"/vms/{uuid}", body, doing="powering on")
        assert prism.vms[uuid]["status"]["resources"]["power_state"] == "ON"
        with pytest.raises(SpecVersionConflict, match="HTTP 409 INVALID_ARGUMENT: Given input "
                                                      "spec_version 0 is older than 1"):
            await adapter.prism.call("PUT", f"/vms/{uuid}", body, doing="powering on again")
    finally:
        await adapter.close()


@pytest.mark.parametrize(("key", "value", "says"), [
    ("prism_url", "http://pc.example.com:9440", "'http://pc.example.com:9440' is not an https URL"),
    ("prism_url", "https://pc.example.com:9440/console", "scheme, host and port only"),
    ("boot_type", "BIOS", "'LEGACY', 'UEFI' or 'SECURE_BOOT'"),
    ("password_env", "hunter2!", "'hunter2!' is not an environment variable name"),
    ("insecure", True, "insecure: true and ca_file"),
    ("cpus", 0, "greater than or equal to 1"),
])
def test_bad_settings_name_the_key_and_value(prism: PrismDouble, ca_file: Path, key: str,
                                             value: object, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        connector(prism, ca_file, **{key: value})
    assert says in str(caught.value)
    if key != "insecure":
        assert key in str(caught.value)
