"""Cache eviction: least recently used first, real disk blocks, held and recent entries kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from compositor import cache_usage, evict_cache, hold_artifact

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
    os.utime(cache / "images" / "k1.json", (NOW - 5000, NOW - 5000))
    os.utime(cache / "images" / "k1.img", (NOW - 5000, NOW - 5000), follow_symlinks=False)
    usage = cache_usage(cache)
    assert 3 * MIB <= usage.total < 5 * MIB
    result = evict_cache(cache, 0, now=NOW)
    assert sorted(_keys(result.removed)) == ["k1", "r1"]
    assert 3 * MIB <= result.freed < 5 * MIB and result.left == 0


def test_a_missing_or_empty_cache_is_fine(tmp_path: Path) -> None:
    assert cache_usage(tmp_path / "nothing").total == 0
    assert evict_cache(tmp_path / "nothing", 0).removed == []
