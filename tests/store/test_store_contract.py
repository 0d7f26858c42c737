"""One contract, every store backend: SQLite (a file) and PostgreSQL (the throw-away cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bot.slack.intents import Claim, IntentStore
from bot.store import states
from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.migrations import LATEST, SchemaTooNew, migrate
from bot.store.model import LeaseLost, StoreError
from bot.store.postgres_store import PostgresStore
from bot.store.task_store import TaskStore

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "tasks.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def opener(location: str) -> Iterator[Opener]:
    """Opens another connection to the test's database (another runner process)."""
    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(open_store(location))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


def new_task(store: Store, key: str | None = None, image_name: str = "t-1"):
    return store.create_task(template="t", connector="c", platform="Local folder", image_name=image_name,
                             requested_by="alice", message="queued", idempotency_key=key)


def test_the_location_picks_the_backend(store: Store, location: str) -> None:
    assert isinstance(store, PostgresStore if location.startswith("postgresql://") else TaskStore)
    assert store.location == location


def test_idempotency_key_creates_one_task(store: Store) -> None:
    first, created = new_task(store, "k1")
    again, created_again = new_task(store, "k1")
    assert created and not created_again
    assert again.id == first.id
    assert len(store.list_tasks()) == 1
    assert [e.kind for e in store.events(first.id)] == ["created"]


def test_claim_is_atomic_across_connections(opener: Opener) -> None:
    ids = {new_task(opener())[0].id for _ in range(8)}
    stores = [opener() for _ in range(4)]  # one connection each, as runner processes have
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(owner: str, store: Store) -> None:
        while (task := store.claim(owner, 60)) is not None:
            with lock:
                claimed.append(task.id)

    threads = [threading.Thread(target=claimer, args=(f"r{i}", s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # each task exactly once


def test_expired_lease_is_taken_over_and_recorded(store: Store) -> None:
    task, _ = new_task(store)
    assert store.claim("a", 0.2).id == task.id
    assert store.claim("b", 10) is None
    time.sleep(0.3)
    resumed = store.claim("b", 10)
    assert resumed is not None and resumed.lease_owner == "b" and resumed.attempts == 2
    assert store.events(task.id)[-1].kind == "resumed"
    with pytest.raises(LeaseLost):
        store.renew(task.id, "a", 10)
    with pytest.raises(LeaseLost):
        store.update(task.id, "a", status=states.COMPOSITING)


def test_every_claim_bumps_the_fencing_token_and_stale_writes_are_refused(store: Store) -> None:
    """A runner paused past its lease (same owner name: a restarted process, or its own second
    claim) must not write with the token of its first claim."""
    task, _ = new_task(store)
    first = store.claim("a", 0.2)
    assert first is not None and first.lease_generation == task.lease_generation + 1
    time.sleep(0.3)
    second = store.claim("a", 10)
    assert second is not None and second.lease_generation == first.lease_generation + 1
    stale, current = first.lease_generation, second.lease_generation
    with pytest.raises(LeaseLost):
        store.update(task.id, "a", fence=stale, status=states.COMPOSITING)
    with pytest.raises(LeaseLost):
        store.add_event(task.id, states.EventKind.STAGE, "late", owner="a", fence=stale)
    with pytest.raises(LeaseLost):
        store.renew(task.id, "a", 10, fence=stale)
    assert store.renew_held("a", {task.id: stale}, 10) == {}
    store.release(task.id, "a", fence=stale)
    after = store.get(task.id)
    assert (after.status, after.lease_owner) == (states.QUEUED, "a")  # nothing of the stale writes
    assert [e.message for e in store.events(task.id)][-1] != "late"
    # the current token writes
    assert store.update(task.id, "a", fence=current, status=states.COMPOSITING).status == states.COMPOSITING
    assert store.renew_held("a", {task.id: current}, 10) == {task.id: False}
    store.release(task.id, "a", fence=current)
    assert store.get(task.id).lease_owner is None


def test_a_finished_status_releases_the_lease_in_the_same_update(store: Store) -> None:
    """A runner dying between its verdict and its release must not leave a finished task leased."""
    for n, verdict in enumerate((states.DONE, states.FAILED, states.CANCELLED)):
        task, _ = new_task(store, image_name=f"t-{n}")
        claimed = store.claim("r", 10, ids=[task.id])
        assert claimed is not None
        fence = claimed.lease_generation
        store.update(task.id, "r", fence=fence, status=states.COMPOSITING)
        store.update(task.id, "r", fence=fence, status=states.UPLOADING)
        finished = store.update(task.id, "r", fence=fence, status=verdict, event=("done", "finished"))
        assert (finished.status, finished.lease_owner, finished.lease_until) == (verdict, None, 0), verdict
        store.release(task.id, "r", fence=fence)  # the release that follows is harmless
        assert store.get(task.id).lease_owner is None


def test_update_writes_row_and_event_together(store: Store) -> None:
    task, _ = new_task(store)
    store.claim("r", 10)
    updated = store.update(task.id, "r", status=states.COMPOSITING, stage="compositing",
                           resources={"vm": "vm-1"}, event=("stage", "Compositing 3 layers"))
    assert updated.status == "compositing" and updated.resources == {"vm": "vm-1"}
    assert store.events(task.id)[-1].message == "Compositing 3 layers"
    with pytest.raises(states.InvalidTransition):
        store.update(task.id, "r", status=states.QUEUED)


def test_cancel_of_a_queued_task_is_immediate_and_of_a_running_one_left_to_its_runner(
        store: Store) -> None:
    queued, _ = new_task(store, image_name="a")
    cancelled = store.request_cancel(queued.id, "bob", "Cancel requested by bob")
    assert cancelled.status == states.CANCELLED and cancelled.finished_at
    running, _ = new_task(store, image_name="b")
    store.claim("r", 10)
    after = store.request_cancel(running.id, "bob", "Cancel requested by bob")
    assert after.status == states.QUEUED and after.cancel_requested == 1


def test_one_statement_renews_every_held_lease_and_reports_lost_and_cancelled(store: Store) -> None:
    ids = [new_task(store)[0].id for _ in range(50)]
    fences = {}
    for _ in ids:
        task = store.claim("a", 30)
        fences[task.id] = task.lease_generation
    store.execute("UPDATE tasks SET lease_until = 0")  # every lease of a has expired
    stolen = store.claim("b", 10)
    assert stolen is not None and stolen.id == ids[0]
    store.request_cancel(ids[1], "bob", "Cancel requested by bob")
    renewed = store.renew_held("a", fences, 30)
    assert set(renewed) == set(ids[1:])  # lost: the one b holds
    assert renewed[ids[1]] is True and not any(renewed[i] for i in ids[2:])
    assert all(store.get(i).lease_until > time.time() + 20 for i in ids[1:])
    assert store.claim("b", 10) is None


def test_a_runner_without_free_slots_claims_only_published_tasks(store: Store) -> None:
    queued, _ = new_task(store, image_name="a")
    waiting, _ = new_task(store, image_name="b")
    store.claim("a", 0.2)
    store.claim("a", 0.2)
    store.update(waiting.id, "a", published={"link": "x", "summary": "VM", "resource": {}})
    time.sleep(0.3)  # runner a died
    assert store.claim("b", 10, published_only=True).id == waiting.id
    assert store.claim("b", 10, published_only=True) is None
    assert store.claim("b", 10, exclude=[queued.id]) is None
    assert store.claim("b", 10, ids=[queued.id]).id == queued.id


def test_events_kinds_and_followers_position(store: Store) -> None:
    task, _ = new_task(store)
    with pytest.raises(ValueError, match="'finished' is not a valid EventKind"):
        store.update(task.id, None, stage="x", event=("finished", "typo"))
    assert store.get(task.id).stage != "x"  # the change went with its event
    store.execute("INSERT INTO task_events (task_id, at, kind, message, data)"
                  " VALUES (?, ?, 'snapshot_taken', 'Snapshot taken', '{}')", [task.id, time.time()])
    events = store.events(task.id)
    assert [e.kind for e in events] == [states.EventKind.CREATED, "snapshot_taken"]
    assert isinstance(events[0].kind, states.EventKind)
    assert store.last_event_id() == events[-1].id
    assert store.events(after=events[0].id) == events[1:]


def test_audit_rows_and_tasks_visible_to(store: Store) -> None:
    store.audit("U1", "publish", "win10", True, "member of S1")
    assert store.rows('SELECT "user", action, allowed, reason FROM audit') == [
        {"user": "U1", "action": "publish", "allowed": 1, "reason": "member of S1"}]
    mine, _ = new_task(store, image_name="a")
    assert [t.id for t in store.tasks_visible_to("alice", [])] == [mine.id]
    assert [t.id for t in store.tasks_visible_to("bob", ["t"])] == [mine.id]
    assert store.tasks_visible_to("bob", ["other"]) == []


def test_intents_are_claimed_once(store: Store) -> None:
    intents = IntentStore(store, ttl=60)
    intent, created = intents.create("U1", "C1", ["win10"], "none")
    assert created and intents.get(intent.id) == intent
    assert intents.claim(intent.id, "U1") == Claim.CLAIMED
    assert intents.claim(intent.id, "U2") == Claim.USED
    assert intents.unclaim(intent.id, "U1") is True
    assert intents.claim("nope", "U1") == Claim.UNKNOWN
    assert intents.purge(older_than=-3600) == 1


def test_two_tasks_never_share_an_image_name(store: Store) -> None:
    names = [new_task(store, f"k{n}", image_name="t-20261202-abcdef")[0].image_name for n in range(3)]
    assert names == ["t-20261202-abcdef", "t-20261202-abcdef-2", "t-20261202-abcdef-3"]


def test_migrations_apply_once_and_a_newer_database_is_refused(opener: Opener) -> None:
    store = opener()
    assert store.schema_version() == LATEST
    assert migrate(store) == []  # type: ignore[arg-type]
    assert opener().schema_version() == LATEST  # a second process opens without migrating
    if isinstance(store, TaskStore):
        store.execute(f"PRAGMA user_version = {LATEST + 1}")
    else:
        store.execute("UPDATE layerbot_schema SET version = ?", [LATEST + 1])
    with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 1}, newer than this layerbot"):
        opener()


# ------------------------------------------------------------ PostgreSQL only
def test_postgres_leases_follow_the_servers_clock_not_the_runners(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(pg_url)
    try:
        task, _ = new_task(store)
        assert store.claim("a", 60) is not None
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # runner b's clock is an hour ahead
        assert store.claim("b", 60) is None
        assert store.get(task.id).lease_until < real() + 61
    finally:
        store.close()


def test_a_postgres_url_with_a_password_is_refused_without_showing_it(pg_url: str) -> None:
    url = pg_url.replace("postgresql://layerbot@", "postgresql://layerbot:s3cr3t-pw@")
    with pytest.raises(StoreError) as refused:
        open_store(url)
    assert "s3cr3t-pw" not in str(refused.value) and "PGPASSWORD" in str(refused.value)


def test_a_wrong_password_is_a_store_error_naming_the_database(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "wrong-s3cr3t")
    with pytest.raises(StoreError, match="cannot connect to the task database postgresql://") as failed:
        open_store(pg_url)
    assert "wrong-s3cr3t" not in str(failed.value)
    assert isinstance(failed.value.__context__, psycopg.Error) or failed.value.__cause__ is None


def test_a_runner_claims_only_tasks_whose_tags_it_has_all_of(store: Store) -> None:
    def queued(tags: list[str], key: str) -> str:
        task, _ = store.create_task(template="t", connector="c", platform="Local folder", image_name=key,
                                    requested_by="alice", message="queued", idempotency_key=key,
                                    runner_tags=tags)
        return task.id

    east = queued(["dc-east"], "east")
    east_win = queued(["windows", "dc-east"], "east-win")
    plain = queued([], "plain")
    assert store.get(east_win).runner_tags == ["dc-east", "windows"]
    assert store.claim("untagged", 60, tags=()).id == plain  # no tags: untagged tasks only
    assert store.claim("untagged", 60, tags=()) is None
    assert store.claim("west", 60, tags=["dc-west", "windows"]) is None
    assert store.claim("east", 60, tags=["dc-east"]).id == east  # not east_win: no "windows"
    assert store.claim("east", 60, tags=["dc-east"]) is None
    assert store.claim("east-win", 60, tags=["windows", "dc-east", "x"]).id == east_win
    retried = store.retry(east_win, "again", "alice", "retried", "east-win-2")
    assert retried.runner_tags == ["dc-east", "windows"]


def test_a_lease_ending_further_ahead_than_any_runner_takes_one_is_expired(store: Store) -> None:
    """Written before the clock stepped back an hour (NTP): its runner may be dead, and the task
    must not wait that hour for another one (issue 18 part 3)."""
    task, _ = new_task(store)
    assert store.claim("a", 30) is not None
    assert store.claim("b", 30) is None  # a lease of a normal length holds
    store.execute("UPDATE tasks SET lease_until = lease_until + ?", [3600])  # type: ignore[attr-defined]
    taken = store.claim("b", 30)
    assert taken is not None and (taken.id, taken.lease_owner) == (task.id, "b")
    assert store.claim("a", 30) is None  # and b's new lease holds
