"""runner.cache_max_gib: the runner evicts old cache entries after a composite, never the
artifact a task is still uploading; `layerbot cache` shows and prunes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

import adapters
from bot.catalog import load_catalog
from bot.cli.commands import main
from bot.store import states
from bot.store.task_store import TaskStore
from compositor import cache_usage, evict_cache
from tests.conftest import BASIC_CATALOG
from tests.fake_adapter import with_fake
from tests.test_runner import kinds, queue, run_until_finished

adapters.register("fake", "tests.fake_adapter")


def _age_cache(cache: Path, seconds: float) -> None:
    """Make every entry look last used `seconds` ago (an extracted layer's files keep their
    mtimes: they are the layer's)."""
    past = time.time() - seconds
    for entry in cache_usage(cache).entries:
        for path in entry.paths:
            os.utime(path, (past, past))


async def test_old_entries_are_evicted_after_a_composite(
    write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path,
) -> None:
    # on disk: the raw disk and the extracted layers are cache entries too (in RAM, only the qcow2)
    text = BASIC_CATALOG.replace("  max_parallel: 2\n",
                                 "  max_parallel: 2\n  cache_max_gib: 0.0001\n  ram_scratch: false\n")
    cat = load_catalog(write_catalog(text))
    first = queue(store, cat)
    await run_until_finished(store, cat, [first])
    assert store.get(first).status == states.DONE
    assert "cache_evicted" not in kinds(store, first)  # its own entries are new and in use
    cache = cat.runner.cache_dir
    entries = cache_usage(cache).entries
    old_keys = {e.key for e in entries if e.kind != "layer"}
    layer_keys = {e.key for e in entries if e.kind == "layer"}
    layer_inodes = {e.paths[0].stat().st_ino for e in entries if e.kind == "layer"}
    assert len(old_keys) == 2  # the raw disk and the qcow2
    assert len(layer_keys) == 2  # the extracted tar layers (base-os, vda)
    _age_cache(cache, 3600)

    bigger = load_catalog(write_catalog(text.replace("disk: {size_gib: 1}", "disk: {size_gib: 2}")))
    second = queue(store, bigger)
    await run_until_finished(store, bigger, [second])
    assert store.get(second).status == states.DONE
    evicted = [e for e in store.events(second) if e.kind == "cache_evicted"]
    assert len(evicted) == 1
    assert set(evicted[0].data["keys"]) == old_keys
    assert evicted[0].message.startswith("cache: removed 2 least recently used entries (")
    assert evicted[0].message.endswith(
        "to stay under 0.0001 GiB and keep 5 GiB free on its disk")
    assert {e.key for e in cache_usage(cache).entries}.isdisjoint(old_keys)
    # the second template used the same layers (taken from the cache, not extracted again:
    # the same entries, just used, so kept)
    assert layer_inodes <= {e.paths[0].stat().st_ino for e in cache_usage(cache).entries}

    # the first template composites again: its disk is no longer cached
    again = queue(store, cat)
    await run_until_finished(store, cat, [again])
    assert "composited" in kinds(store, again) and "cache_hit" not in kinds(store, again)


async def test_an_artifact_being_uploaded_is_never_evicted(
    write_catalog: Callable[[str], Path], store: TaskStore,
) -> None:
    cat = load_catalog(write_catalog(with_fake("upload_seconds: 2")))
    cache = cat.runner.cache_dir
    task_id = queue(store, cat)
    run = asyncio.create_task(run_until_finished(store, cat, [task_id]))
    while store.get(task_id).status != states.UPLOADING:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    # another runner pruning everything it may (no grace period) while the upload runs
    during = await asyncio.to_thread(evict_cache, cache, 0, min_age=0)
    artifact = [e for e in cache_usage(cache).entries if e.kind == "img"]
    assert len(artifact) == 1 and artifact[0].key not in {e.key for e in during.removed}
    while store.get(task_id).status != states.ACTION_REQUIRED:  # uploaded, VM created
        await asyncio.sleep(0.05)
    vm = Path(store.get(task_id).link.removeprefix("file://"))
    vm.with_name(vm.name + ".off").touch()  # the guest powers off
    await run
    assert store.get(task_id).status == states.DONE
    after = await asyncio.to_thread(evict_cache, cache, 0, min_age=0)
    assert artifact[0].key in {e.key for e in after.removed}  # released once uploaded
    assert cache_usage(cache).total == 0


def test_cache_command_lists_and_prunes(catalog_dir: Path) -> None:
    cache = catalog_dir / ".layerbot" / "cache"
    (cache / "images").mkdir(parents=True)
    (cache / "images" / "0123456789abcdef.qcow2").write_bytes(os.urandom(8192))
    (cache / "images" / "0123456789abcdef.json").write_text("{}")
    _age_cache(cache, 3600)
    cli = CliRunner()
    config = ["--config", str(catalog_dir / "layerbot.yml"), "--db",
              str(catalog_dir / "t.db")]
    shown = cli.invoke(main, [*config, "cache"])
    assert shown.exit_code == 0, shown.output
    assert "0123456789ab" in shown.output and "qcow2" in shown.output
    assert "(limit 50 GiB, keeping 5 GiB free)" in shown.output
    assert cli.invoke(main, [*config, "cache", "--max-gib", "1"]).exit_code == 2
    pruned = cli.invoke(main, [*config, "cache", "--prune", "--max-gib", "0"])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith("removed 1 entry (")
    assert cache_usage(cache).entries == []
