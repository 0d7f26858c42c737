"""The gcp adapter's Compute side against the local Compute double: the image made from the
uploaded object, operation errors, GCE names, the shared zone watch, removal of the image."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.base import (
    AuthError,
    PlatformError,
    PlatformStep,
    Published,
    RetryableError,
    clean_up,
)
from adapters.gcp import Adapter, GcpImage, GcpPublished, names
from adapters.gcp.compute_faults import AlreadyExistsError
from adapters.gcp.instance_watch import zone_watch
from adapters.steps import Outcome, StepRunner, cancel

from .compute_double import ComputeDouble
from .compute_fixtures import PROJECT, ZONE, clients, compute, connector, context

__all__ = ["compute"]
pytestmark = pytest.mark.timeout(60)


async def make_image(adapter: Adapter, ctx: object) -> None:
    """The publish's image step alone (the object is not checked: no storage here)."""
    await StepRunner([PlatformStep("image", adapter, adapter._create_image)]).run(ctx)  # type: ignore[arg-type]


async def test_image_from_the_object_with_labels_features_and_family(compute: ComputeDouble,
                                                                     tmp_path: Path) -> None:
    adapter = Adapter(connector(compute, storage_locations=["europe-west1"]), clients())
    notes: list[str] = []
    ctx = context("win10-20260101-000000-abc123", tmp_path / "a.tar.gz", notes=notes)
    try:
        await make_image(adapter, ctx)
    finally:
        await adapter.close()
    [(_, rid, body)] = compute.received
    assert body["rawDisk"]["source"] == (
        "https://storage.googleapis.com/layerbot-images/layerbot/win10/t0c0ffee.tar.gz")
    assert body["labels"] == {"team": "euc", "layerbot-template": "win10", "layerbot-task": "t0c0ffee"}
    assert body["family"] == "layered" and body["storageLocations"] == ["europe-west1"]
    assert [f["type"] for f in body["guestOsFeatures"]] == ["UEFI_COMPATIBLE", "GVNIC"]
    assert body["architecture"] == "X86_64" and rid
    assert compute.images["win10-20260101-000000-abc123"]["status"] == "READY"
    assert any("RUNNING" in n for n in notes)  # the operation was followed over polls
    assert ctx.published is not None
    assert ctx.published.link == (
        "https://console.cloud.google.com/compute/imagesDetail/projects/layerbot-test/global/"
        "images/win10-20260101-000000-abc123?project=layerbot-test")
    text = adapter.next_steps(ctx.published)
    assert text.startswith("Create a VM from the Google Cloud image win10-20260101-000000-abc123 "
                           "on the Google Cloud console, and power it on")
    assert "https://console.cloud.google.com/compute/instancesAdd?project=layerbot-test" in text


@pytest.mark.parametrize("template_name", [
    "Win10.Office_2024-20260101-000000-abc123",      # uppercase, dots, underscores
    "9lives-20260101-000000-abc123",                 # a leading digit
    "w" * 80 + "-20260101-000000-abc123",           # too long
    "win10-",                                        # a trailing dash
])
async def test_a_template_name_that_is_not_a_gce_name_still_gives_a_valid_image(
        compute: ComputeDouble, tmp_path: Path, template_name: str) -> None:
    adapter = Adapter(connector(compute), clients())
    ctx = context(template_name, tmp_path / "a.tar.gz", template=template_name[:20].lower())
    try:
        await make_image(adapter, ctx)  # the double refuses an invalid name
    finally:
        await adapter.close()
    [name] = compute.images
    assert names.is_name(name) and len(name) <= 63
    assert name == names.image_name(template_name, "t0c0ffee")  # deterministic
    assert name != names.image_name(template_name, "t0other1")  # unique per task
    if "." in template_name:  # what the sanitising replaced still tells two names apart
        assert names.image_name(template_name.replace(".", "_"), "t0c0ffee") != name


async def test_an_operation_error_keeps_googles_code_and_message_and_removes_the_image(
        compute: ComputeDouble, tmp_path: Path) -> None:
    compute.fail_image = ("INVALID_IMAGE_FILE", "The file is not a valid image tarball.", 400)
    adapter = Adapter(connector(compute), clients())
    ctx = context("win10-bad", tmp_path / "a.tar.gz")
    try:
        with pytest.raises(PlatformError, match="INVALID_IMAGE_FILE: The file is not a valid "
                                                "image tarball") as caught:
            await make_image(adapter, ctx)
    finally:
        await adapter.close()
    assert "win10-bad" in str(caught.value)
    assert compute.images == {} and ctx.resources == []  # the failed image was deleted


async def test_http_errors_become_adapter_errors_with_reason_and_message(
        compute: ComputeDouble, tmp_path: Path) -> None:
    adapter = Adapter(connector(compute), clients())
    compute.http_errors.append(("POST", "/global/images$", 403, "forbidden",
                                "Required 'compute.images.create' permission"))
    try:
        with pytest.raises(AuthError, match=r"403 forbidden: Required .compute\.images\.create."):
            await make_image(adapter, context("win10-a", tmp_path / "a.tar.gz"))
        # another's image of that name: 409, and cleanup leaves it alone
        compute.images["win10-b"] = {"name": "win10-b", "status": "READY", "labels": {},
                                     "selfLink": compute.image_link("win10-b")}
        ctx = context("win10-b", tmp_path / "a.tar.gz")
        with pytest.raises(AlreadyExistsError, match="409 alreadyExists"):
            await make_image(adapter, ctx)
        assert "win10-b" in compute.images
        assert any("not made by task t0c0ffee" in line for line in ctx.removed)
        # a rate limit is retried (Retry-After 0) and the publish goes on
        compute.http_errors.append(("POST", "/global/images$", 429, "rateLimitExceeded",
                                    "Rate Limit Exceeded"))
        await make_image(adapter, context("win10-c", tmp_path / "a.tar.gz"))
        assert compute.images["win10-c"]["status"] == "READY"
    finally:
        await adapter.close()
    from adapters.gcp.compute_faults import by_status

    assert isinstance(by_status(403, "rateLimitExceeded", "x"), RetryableError)


async def test_a_quota_error_is_a_platform_error_keeping_reason_and_message(
        compute: ComputeDouble, tmp_path: Path) -> None:
    """QUOTA_EXCEEDED comes with HTTP 403 but is not about the credentials."""
    adapter = Adapter(connector(compute), clients())
    compute.fail_image = ("QUOTA_EXCEEDED", "Quota 'IMAGES' exceeded. Limit: 100.0 globally.", 403)
    compute.http_errors.append(("POST", "/global/images$", 403, "quotaExceeded",
                                "Quota exceeded for quota metric 'Queries'"))
    try:
        with pytest.raises(PlatformError) as by_http:
            await make_image(adapter, context("win10-q1", tmp_path / "a.tar.gz"))
        with pytest.raises(PlatformError) as by_operation:
            await make_image(adapter, context("win10-q2", tmp_path / "a.tar.gz"))
    finally:
        await adapter.close()
    assert not isinstance(by_http.value, AuthError)
    assert "403 quotaExceeded: Quota exceeded for quota metric 'Queries'" in str(by_http.value)
    assert not isinstance(by_operation.value, AuthError)
    assert "QUOTA_EXCEEDED: Quota 'IMAGES' exceeded. Limit: 100.0 globally." in str(by_operation.value)
    from adapters.gcp.compute_faults import by_status

    assert isinstance(by_status(403, "insufficientPermissions", "x"), AuthError)
    assert isinstance(by_status(403, "", "x"), AuthError)


async def test_a_wrong_token_is_an_auth_error(compute: ComputeDouble, tmp_path: Path) -> None:
    compute.token = "another-token"
    adapter = Adapter(connector(compute), clients())
    try:
        with pytest.raises(AuthError, match="credentials were refused") as caught:
            await make_image(adapter, context("win10-a", tmp_path / "a.tar.gz"))
    finally:
        await adapter.close()
    assert "test-token" not in str(caught.value)


async def test_cancel_while_the_image_is_made_deletes_it(compute: ComputeDouble,
                                                         tmp_path: Path) -> None:
    compute.polls_to_done = 1000
    adapter = Adapter(connector(compute), clients())
    ctx = context("win10-cancel", tmp_path / "a.tar.gz")
    try:
        job = asyncio.create_task(make_image(adapter, ctx))
        while "win10-cancel" not in compute.images:
            await asyncio.sleep(0.01)
        cancel(job)
        compute.polls_to_done = 2  # the delete's operation ends
        with pytest.raises(asyncio.CancelledError):
            await job
    finally:
        await adapter.close()
    assert compute.images == {} and ctx.resources == []
    assert ctx.removed == [GcpImage(project=PROJECT, name="win10-cancel", task="t0c0ffee").describe()]


async def test_the_image_step_again_after_a_failed_attempts_cleanup_makes_the_image(
        compute: ComputeDouble, tmp_path: Path) -> None:
    """A retry (or a takeover) reaching the image step after cleanup deleted the first image:
    a new requestId, so Compute Engine makes a new image instead of answering with the first
    insert's finished operation."""
    adapter = Adapter(connector(compute), clients())
    ctx = context("win10-again", tmp_path / "a.tar.gz")
    try:
        await make_image(adapter, ctx)
        await clean_up(adapter, ctx, Outcome.FAILED)
        assert compute.images == {} and ctx.resources == []
        ctx.published = None
        await make_image(adapter, ctx)
    finally:
        await adapter.close()
    assert compute.images["win10-again"]["status"] == "READY"
    first, second = (rid for _, rid, _ in compute.received)
    assert first != second
    [image] = [r for r in ctx.resources if isinstance(r, GcpImage)]
    assert image.request_id == second


async def test_a_repeated_insert_while_the_record_lives_reuses_its_request_id(
        compute: ComputeDouble, tmp_path: Path) -> None:
    """A runner taking the task over during the image step sends the recorded requestId:
    Google answers with the first insert's operation, no second image."""
    adapter = Adapter(connector(compute), clients())
    recorded = GcpImage(project=PROJECT, name="win10-resume", task="t0c0ffee",
                        request_id=str(uuid.uuid4()))
    ctx = context("win10-resume", tmp_path / "a.tar.gz", resources=[recorded])
    try:
        await make_image(adapter, ctx)
        ctx.published = None
        await make_image(adapter, ctx)  # the same record: the same requestId
    finally:
        await adapter.close()
    assert [rid for _, rid, _ in compute.received] == [recorded.request_id] * 2
    assert ctx.resources == [recorded] and compute.images["win10-resume"]["status"] == "READY"


async def test_409_for_this_tasks_own_image_is_taken_over_once_ready(
        compute: ComputeDouble, tmp_path: Path) -> None:
    """An image of this name carrying this task's label (an earlier insert whose record was
    lost): waited for while PENDING, then the publish goes on with it."""
    adapter = Adapter(connector(compute), clients())
    compute.images["win10-mine"] = {"name": "win10-mine", "status": "PENDING",
                                    "labels": {"layerbot-task": "t0c0ffee"},
                                    "selfLink": compute.image_link("win10-mine")}
    ctx = context("win10-mine", tmp_path / "a.tar.gz")

    async def becomes_ready() -> None:
        await asyncio.sleep(0.2)
        compute.images["win10-mine"]["status"] = "READY"

    try:
        ready = asyncio.create_task(becomes_ready())
        await make_image(adapter, ctx)
        await ready
    finally:
        await adapter.close()
    assert ctx.published is not None and ctx.published.summary == "Google Cloud image win10-mine"
    assert compute.calls["GET /compute/v1/projects/{project}/global/images/{image}"] >= 2


async def test_cancel_while_the_image_is_pending_waits_for_it_then_deletes_it(
        compute: ComputeDouble, tmp_path: Path) -> None:
    """Compute Engine refuses to delete a PENDING image (400 resourceNotReady): cleanup waits
    until it is READY (or FAILED), then deletes it."""
    compute.polls_to_done = 1000
    adapter = Adapter(connector(compute), clients())
    ctx = context("win10-pending", tmp_path / "a.tar.gz")
    try:
        job = asyncio.create_task(make_image(adapter, ctx))
        while "win10-pending" not in compute.images:
            await asyncio.sleep(0.01)
        cancel(job)
        compute.polls_to_done = 6  # made a few polls later
        with pytest.raises(asyncio.CancelledError):
            await job
    finally:
        await adapter.close()
    assert compute.images == {} and ctx.resources == []
    assert ctx.removed == [GcpImage(project=PROJECT, name="win10-pending", task="t0c0ffee").describe()]


@pytest.mark.parametrize(("setting", "value"), [
    ("storage_locations", ["europe-west1"]), ("storage_locations", ["eu"]),
    ("licenses", ["projects/windows-cloud/global/licenses/windows-10-enterprise-byol"]),
])
async def test_the_double_accepts_what_google_accepts(compute: ComputeDouble, tmp_path: Path,
                                                      setting: str, value: list[str]) -> None:
    adapter = Adapter(connector(compute, **{setting: value}), clients())
    try:
        await make_image(adapter, context("win10-ok", tmp_path / "a.tar.gz"))
    finally:
        await adapter.close()
    [(_, rid, body)] = compute.received
    assert uuid.UUID(rid).version == 4 and body[{"storage_locations": "storageLocations"}.get(
        setting, setting)] == value


async def test_the_double_refuses_a_request_id_that_is_not_a_uuid(compute: ComputeDouble) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {compute.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for rid in ("task-t0c0ffee", str(uuid.UUID(int=0))):
            async with http.post(f"{compute.url}/compute/v1/projects/{PROJECT}/global/images",
                                 params={"requestId": rid}, json={"name": "x"}) as answer:
                assert answer.status == 400, rid
                assert "requestId" in (await answer.json())["error"]["message"]


def test_the_image_step_imports_compute_v1_off_the_event_loop() -> None:
    """google.cloud.compute_v1 takes seconds to import: the first import must happen on a
    worker thread, never stalling the event loop (a fresh interpreter, where it is not
    imported yet; a generous bound on the loop's lag)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "tests.gcp.image_step_probe"], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["already_imported"] is False and found["status"] == "READY"
    assert found["on_loop_thread"] and not any(found["on_loop_thread"]), found
    assert found["max_lag"] < 0.5, found


async def _vm(double: ComputeDouble, adapter: Adapter, action: str, name: str, image: str = "") -> None:
    """What an admin does on the console: create a VM from the image, or start/stop it."""
    from google.cloud import compute_v1

    def call(c: object) -> None:
        instances = c.instances  # type: ignore[attr-defined]
        if action == "delete":
            op = instances.delete_unary(project=PROJECT, zone=ZONE, instance=name)
        elif action == "create":
            body = compute_v1.Instance(
                name=name, machine_type=f"zones/{ZONE}/machineTypes/e2-small",
                disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=(
                    compute_v1.AttachedDiskInitializeParams(
                        source_image=f"projects/{PROJECT}/global/images/{image}")))])
            op = instances.insert_unary(project=PROJECT, zone=ZONE, instance_resource=body)
        else:
            op = getattr(instances, f"{action}_unary")(project=PROJECT, zone=ZONE, instance=name)
        # (not op.result() of the non-unary call: its operations client ignores the endpoint)
        done = c.zone_operations.wait(project=PROJECT, zone=ZONE, operation=op.name)  # type: ignore[attr-defined]
        assert done.status == compute_v1.Operation.Status.DONE

    await adapter.session.call(call, f"{action} {name}")


async def test_watch_done_once_a_vm_from_the_image_ran_and_stopped_one_listing_per_zone(
        compute: ComputeDouble, tmp_path: Path) -> None:
    adapter = Adapter(connector(compute), clients())
    ctxs = [context(f"win10-w{i}", tmp_path / "a.tar.gz", task_id=f"t0000000{i}") for i in range(3)]
    try:
        for ctx in ctxs:
            await make_image(adapter, ctx)
        waits = [asyncio.create_task(adapter.wait_for_shutdown(ctx.published, ctx))  # type: ignore[arg-type]
                 for ctx in ctxs]
        await asyncio.sleep(0.3)
        watch = zone_watch(adapter.session, PROJECT, ZONE)
        assert watch is not None and len(watch.waiting) == 3
        lists = compute.calls["GET /compute/v1/projects/{project}/zones/{zone}/disks"]
        # one listing per round for all three tasks (+ 1: a round under way, not yet counted)
        assert 1 <= lists <= watch.rounds + 1
        await _vm(compute, adapter, "create", "vm-1", image="win10-w1")
        while not any(r.kind == "gcp.instance_ran" for r in ctxs[1].resources):
            await asyncio.sleep(0.02)
        assert not waits[1].done()
        await _vm(compute, adapter, "stop", "vm-1")
        await asyncio.wait_for(waits[1], 10)
        assert not waits[0].done() and not waits[2].done()
        # a VM from another image's task, started and stopped between two rounds: the
        # rounds' disk listings wait while it is created and stopped
        pause = asyncio.Event()
        compute.held.append(("GET", "/disks$", pause))
        await _vm(compute, adapter, "create", "vm-2", image="win10-w2")
        await _vm(compute, adapter, "stop", "vm-2")
        pause.set()
        await asyncio.wait_for(waits[2], 10)
        assert not any(r.kind == "gcp.instance_ran" for r in ctxs[2].resources)  # never seen running
        waits[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waits[0]
        assert zone_watch(adapter.session, PROJECT, ZONE) is None  # gone with the last wait
    finally:
        await adapter.close()


async def test_watch_done_when_a_vm_seen_running_is_deleted(compute: ComputeDouble,
                                                             tmp_path: Path) -> None:
    """A VM that shut down and was deleted between two rounds: seen RUNNING, then gone."""
    adapter = Adapter(connector(compute), clients())
    ctx = context("win10-del", tmp_path / "a.tar.gz")
    try:
        await make_image(adapter, ctx)
        wait = asyncio.create_task(adapter.wait_for_shutdown(ctx.published, ctx))  # type: ignore[arg-type]
        await _vm(compute, adapter, "create", "vm-del", image="win10-del")
        while not any(r.kind == "gcp.instance_ran" for r in ctx.resources):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert not wait.done()
        await _vm(compute, adapter, "delete", "vm-del")
        await asyncio.wait_for(wait, 10)
    finally:
        await adapter.close()


async def test_a_failing_watch_gives_each_waiting_task_its_own_exception(
        compute: ComputeDouble) -> None:
    from adapters.gcp.instance_watch import watching
    from adapters.retry import RetryPolicy

    adapter = Adapter(connector(compute), clients())
    once = RetryPolicy(attempts=1, budget=1.0, first_delay=0.01, max_delay=0.01)
    compute.http_errors.append(("GET", "/disks$", 403, "forbidden", "Required 'compute.disks.list'"))
    try:
        async with watching(adapter.session, PROJECT, ZONE, "img-a", (0.01, 0.05), once) as a, \
                watching(adapter.session, PROJECT, ZONE, "img-b", (0.01, 0.05), once) as b:
            first, second = await asyncio.wait_for(asyncio.gather(a.get(), b.get()), 10)
    finally:
        await adapter.close()
    assert isinstance(first, AuthError) and isinstance(second, AuthError)
    assert first is not second and str(first) == str(second)
    assert "compute.disks.list" in str(first)


async def test_an_unexpected_watch_error_reaches_each_task_and_the_rounds_end_with_the_last(
        compute: ComputeDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.gcp.instance_watch import ZoneWatch, watching

    async def broken(self: ZoneWatch) -> dict[str, object]:
        raise KeyError("users")

    def rounds() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("gcp-watch") and not t.done()]

    adapter = Adapter(connector(compute), clients())
    monkeypatch.setattr(ZoneWatch, "one_round", broken)
    try:
        async with watching(adapter.session, PROJECT, ZONE, "img-a", (0.01, 0.05)) as a, \
                watching(adapter.session, PROJECT, ZONE, "img-b", (0.01, 0.05)) as b:
            first, second = await asyncio.wait_for(asyncio.gather(a.get(), b.get()), 10)
        assert isinstance(first, PlatformError) and isinstance(second, PlatformError)
        assert first is not second and str(first).endswith("failed: 'users' is missing")
        monkeypatch.undo()
        async with watching(adapter.session, PROJECT, ZONE, "img-c", (0.01, 0.05)) as c:
            assert await asyncio.wait_for(c.get(), 10) == []  # a new watch for a new task
            assert len(rounds()) == 1
        assert rounds() == [] and zone_watch(adapter.session, PROJECT, ZONE) is None
    finally:
        await adapter.close()


@pytest.mark.parametrize(("start", "stop", "ran_and_stopped"), [
    # 10:00 at -08:00 is 18:00 UTC: a stop at 11:00 UTC came before it (the strings say after)
    ("2026-01-01T10:00:00.000-08:00", "2026-01-01T11:00:00.000+00:00", False),
    ("2026-01-01T10:00:00.000-08:00", "2026-01-01T19:00:00.000+00:00", True),
    ("2026-01-01T10:00:00.5Z", "2026-01-01T10:00:00.25+00:00", False),
    ("", "2026-01-01T10:00:00.000+00:00", False),
])
def test_start_and_stop_times_are_compared_as_times(start: str, stop: str,
                                                    ran_and_stopped: bool) -> None:
    from adapters.gcp.instance_watch import InstanceState, parse_time

    state = InstanceState("vm", "TERMINATED", parse_time(start), parse_time(stop))
    assert state.ran_and_stopped is ran_and_stopped


async def test_watch_times_out(compute: ComputeDouble, tmp_path: Path) -> None:
    adapter = Adapter(connector(compute, watch_timeout=0.3), clients())
    published = Published("l", "s", GcpPublished(project=PROJECT, zone=ZONE, name="nothing",
                                                 published_at=time.time()))
    try:
        from adapters.base import GuestTimeoutError

        with pytest.raises(GuestTimeoutError, match="watch_timeout"):
            await adapter.wait_for_shutdown(published, context("x", tmp_path / "a"))
    finally:
        await adapter.close()


@pytest.mark.parametrize(("key", "value", "says"), [
    ("project", "My_Project", "'My_Project' is not a project ID"),
    ("zone", "europe-west1", "'europe-west1' is not a zone"),
    ("bucket", "gs://b", "'gs://b' is not a bucket name"),
    ("image_family", "Win10", "'Win10' is not a valid image family"),
    ("labels", {"Team": "x"}, "label key 'Team'"),
    ("labels", {"team": "EUC"}, "label 'team' value 'EUC'"),
    ("labels", {"layerbot-task": "x"}, "'layerbot-task' is set by layerbot"),
    ("guest_os_features", ["UEFI"], "UEFI_COMPATIBLE"),
    ("storage_locations", ["us", "eu"], "one storage location"),
    ("licenses", ["windows"], "'windows' is not a license URL"),
    ("compute_endpoint", "ftp://x", "'ftp://x' is not an http(s) URL"),
    ("credentials_file_env", "LAYERBOT_TEST_NO_SUCH_VAR", "LAYERBOT_TEST_NO_SUCH_VAR"),
])
def test_bad_settings_name_the_key_and_value(compute: ComputeDouble, key: str, value: object,
                                              says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        connector(compute, **{key: value})
    assert says in str(caught.value)
    if key != "credentials_file_env":
        assert key in str(caught.value)


