"""Cache eviction: least recently used first, real disk blocks, held and recent entries kept."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

import compositor.evict as evict_module
from compositor import cache_usage, errors, evict_cache, hold_artifact
from compositor.evict import MIN_AGE, _remove_entry, hold_artifact_async

MIB = 1 << 20
NOW = time.time()


def _file(path: Path, mib: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(os.urandom(mib * MIB))
        fh.truncate(64 * mib * MIB)  # a sparse tail occupies nothing
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def _artifact(cache: Path, key: str, mib: int, age_s: float, ext: str = "qcow2") -> Path:
    (cache / "images").mkdir(parents=True, exist_ok=True)
    facts = cache / "images" / f"{key}.json"
    facts.write_text('{"virtual_size": 1, "format": "qcow2"}')
    os.utime(facts, (NOW - age_s, NOW - age_s))
    return _file(cache / "images" / f"{key}.{ext}", mib, age_s)


def _keys(entries: list) -> list[str]:
    return [e.key for e in entries]


def test_least_recently_used_go_first_until_under_the_limit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _file(cache / "raw" / "r-old.img", 4, age_s=5000)
    _artifact(cache, "a-old", 2, age_s=4000)
    _artifact(cache, "b-mid", 2, age_s=3000, ext="tar.gz")
    _artifact(cache, "c-new", 2, age_s=2000)
    usage = cache_usage(cache)
    assert _keys(usage.entries) == ["r-old", "a-old", "b-mid", "c-new"]
    assert usage.entries[2].kind == "tar.gz" and usage.entries[0].kind == "raw disk"
    assert 10 * MIB <= usage.total < 14 * MIB  # blocks, not the 640 MiB of apparent size

    result = evict_cache(cache, 5 * MIB, now=NOW)
    assert _keys(result.removed) == ["r-old", "a-old"]
    assert 6 * MIB <= result.freed < 9 * MIB
    assert result.left == cache_usage(cache).total < 5 * MIB
    assert not (cache / "images" / "a-old.json").exists()
    assert (cache / "images" / "b-mid.tar.gz").exists() and (cache / "images" / "c-new.json").exists()
    # under the limit: nothing more goes
    assert evict_cache(cache, 5 * MIB, now=NOW).removed == []


def test_held_kept_and_recent_entries_stay(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    held = _artifact(cache, "held", 2, age_s=9000)
    kept = _artifact(cache, "kept", 2, age_s=8000)
    _artifact(cache, "recent", 2, age_s=10)  # e.g. a cache hit whose task takes its hold now
    _artifact(cache, "plain", 2, age_s=7000)
    hold = hold_artifact(held)
    try:
        result = evict_cache(cache, 0, keep=[kept], now=NOW)
        assert _keys(result.removed) == ["plain"]
        assert result.busy == 3
    finally:
        hold.release()
    assert _keys(evict_cache(cache, 0, now=NOW).removed) == ["held", "kept"]
    assert _keys(cache_usage(cache).entries) == ["recent"]


def test_a_hard_linked_raw_artifact_counts_once_and_frees_with_its_last_name(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    raw = _file(cache / "raw" / "r1.img", 3, age_s=6000)
    (cache / "images").mkdir()
    os.link(raw, cache / "images" / "k1.img")  # the ``raw`` format's artifact is the raw disk
    (cache / "images" / "k1.json").write_text("{}")
    os.utime(cache / "images" / "k1.json", (NOW - 6000, NOW - 6000))
    usage = cache_usage(cache)
    assert 3 * MIB <= usage.total < 5 * MIB
    # the artifact's name goes, but the raw disk still has the blocks: only the facts file's
    # (a block or so) are freed
    first = evict_cache(cache, 0, keep=[raw], now=NOW)
    assert _keys(first.removed) == ["k1"] and first.freed <= 64 * 1024
    assert first.left == usage.total - first.freed >= 3 * MIB
    rest = evict_cache(cache, 0, now=NOW)
    assert _keys(rest.removed) == ["r1"]
    assert rest.freed == first.left and rest.left == 0


def test_an_entry_used_after_the_scan_is_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = _artifact(cache, "k", 1, age_s=9000)
    entry = cache_usage(cache).entries[0]
    os.utime(path)  # a cache hit renews it between the evictor's scan and its lock
    assert _remove_entry(entry, MIN_AGE, time.time()) is None
    assert path.exists() and (cache / "images" / "k.json").exists()


def test_a_hold_waiting_on_an_evictor_fails_when_the_file_went(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "cache", "k", 1, age_s=9000)
    evictor = os.open(path, os.O_RDONLY)
    fcntl.flock(evictor, fcntl.LOCK_EX)
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            hold_artifact(path).release()
            outcome.append(None)
        except FileNotFoundError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=take)
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # waits for the evictor's lock
    path.unlink()
    os.close(evictor)
    waiter.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError)


def test_a_missing_or_empty_cache_is_fine(tmp_path: Path) -> None:
    assert cache_usage(tmp_path / "nothing").total == 0
    assert evict_cache(tmp_path / "nothing", 0).removed == []


async def test_the_async_hold_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "cache", "k", 1, age_s=9000)
    evictor = os.open(path, os.O_RDONLY)
    fcntl.flock(evictor, fcntl.LOCK_EX)
    holding = asyncio.ensure_future(hold_artifact_async(path))
    # a blocking flock would stop this loop for good: the lock below is never released
    await asyncio.sleep(0.2)
    assert not holding.done()
    os.close(evictor)
    hold = await asyncio.wait_for(holding, 5)
    hold.release()


def test_entries_also_go_until_the_disk_has_enough_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    _artifact(cache, "a-old", 2, age_s=3000)
    _artifact(cache, "b-mid", 2, age_s=2000)
    _artifact(cache, "c-new", 2, age_s=1000)
    start = cache_usage(cache).total

    usage = namedtuple("usage", "total used free")

    def disk_usage(_: object) -> tuple[int, int, int]:  # 1 MiB free + what was removed
        return usage(1 << 40, 0, MIB + start - cache_usage(cache).total)

    monkeypatch.setattr(errors.shutil, "disk_usage", disk_usage)
    result = evict_cache(cache, None, min_free_bytes=4 * MIB, now=NOW)
    assert _keys(result.removed) == ["a-old", "b-mid"]  # 1 + 2 + 2 MiB >= 4 MiB free
    assert evict_cache(cache, None, now=NOW).removed == []  # no rule: nothing goes


def test_a_hold_of_this_process_counts_where_flock_would_not_conflict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    held = _artifact(cache, "held", 1, age_s=9000)
    hold = hold_artifact(held)
    # NFS: flock is emulated with POSIX locks, which never conflict within one process
    monkeypatch.setattr(evict_module.fcntl, "flock", lambda fd, op: None)
    try:
        assert evict_cache(cache, 0, now=NOW).removed == []
    finally:
        hold.release()
    assert _keys(evict_cache(cache, 0, now=NOW).removed) == ["held"]
