"""sweep_stale removes what a build killed with SIGKILL left behind, and nothing of a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compositor import scratch, sweep_stale
from compositor.sweep import RESERVE_PREFIX, STALE_AFTER, host_name

from .layer_builder import directory, file, write_tar

ROOT = Path(__file__).resolve().parents[2]

# A build that stops (forever) right after its raw disk is written into the cache's tmp/.
CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from compositor import ImageSpec, LayerSource, build_image
    from compositor import build

    real = build.FILESYSTEM_BUILDERS["ext4"]

    async def builder(*args):
        await real(*args)
        print("ready", flush=True)
        time.sleep(3600)

    build.FILESYSTEM_BUILDERS["ext4"] = builder
    layer, work, cache = map(Path, sys.argv[1:4])
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="qcow2")
    asyncio.run(build_image(spec, work_dir=work, cache_dir=cache))
""")


def _leftovers(work: Path, cache: Path) -> list[Path]:
    found = list(work.glob("layerbot-build-*")) + list((cache / "tmp").glob("*"))
    return found + list((cache / "digests").glob(".tmp-*"))


def _killed_mid_build(layer: Path, work: Path, cache: Path, env: dict[str, str]) -> int:
    """Run CHILD until its raw disk is written; check sweep_stale leaves the live build alone;
    SIGKILL it. Returns its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(layer), str(work), str(cache)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **env},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        ram = scratch.ram_root(Path(env[scratch.ENV_VAR])) if env[scratch.ENV_VAR] != "off" else None
        assert sweep_stale(work, cache, ram_root=ram) == []  # the owner is alive: nothing is touched
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    return child.pid


def test_sweep_removes_what_a_killed_build_left_on_disk(tmp_path: Path) -> None:
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/os-release", b"ID=t\n")])
    work, cache = tmp_path / "work", tmp_path / "cache"
    pid = _killed_mid_build(layer, work, cache, {scratch.ENV_VAR: "off"})
    builds = list(work.glob("layerbot-build-*"))
    temps = list((cache / "tmp").glob("*.img"))
    assert len(builds) == 1 and len(temps) == 1  # SIGKILL: the build could not clean up
    tag = f"{host_name()}-{pid}-"
    assert builds[0].name.startswith("layerbot-build-" + tag)
    assert temps[0].name.startswith("tmp-" + tag)
    removed = sweep_stale(work, cache)
    assert sorted(removed) == sorted(builds + temps)
    assert _leftovers(work, cache) == []


def test_sweep_removes_what_a_killed_build_left_in_ram(tmp_path: Path, ram_scratch: Path | None) -> None:
    if ram_scratch is None:
        pytest.skip("this machine has no writable tmpfs")
    layer = write_tar(tmp_path / "os.tar", [directory("etc"), file("etc/os-release", b"ID=t\n")])
    work, cache = tmp_path / "work", tmp_path / "cache"
    _killed_mid_build(layer, work, cache, {scratch.ENV_VAR: str(ram_scratch)})
    ram = scratch.ram_root(ram_scratch)
    assert ram is not None
    builds = list(ram.glob("layerbot-build-*"))
    reservations = list(ram.glob(RESERVE_PREFIX + "*"))
    assert len(builds) == 1 and len(reservations) == 1
    assert (builds[0] / "disk.img").is_file()  # the raw disk was in RAM, not in the cache
    assert not list((cache / "tmp").glob("*.img")) and not list(work.iterdir())
    assert scratch.reserved_by_live_builds(ram, RESERVE_PREFIX) == 0  # a dead build's is ignored
    removed = sweep_stale(work, cache, ram_root=ram)
    assert sorted(removed) == sorted(builds + reservations)
    assert sorted(os.listdir(ram)) == [".lock"]


def test_sweep_keeps_live_owners_and_fresh_foreign_entries(tmp_path: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    (cache / "digests").mkdir()
    work.mkdir()
    host = host_name()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_dir = work / f"layerbot-build-{host}-{sleeper.pid}-abcd1234"
        own_dir = work / f"layerbot-build-{host}-{os.getpid()}-abcd1234"
        live_tmp = cache / "tmp" / f"tmp-{host}-{sleeper.pid}-abcd1234.img"
        # the sleeper's pid, but the entry is older than the process: the pid was reused
        reused_dir = work / f"layerbot-build-{host}-{sleeper.pid}-zzzz9999"
        dead_dir = work / f"layerbot-build-{host}-{dead.pid}-abcd1234"
        dead_tmp = cache / "tmp" / f"tmp-{host}-{dead.pid}-x_cd1234.tar.gz"
        dead_digest = cache / "digests" / f".tmp-{host}-{dead.pid}-abcd1234"
        dead_spool = work / f"layerbot-build-{host}-{dead.pid}-qw_rty12.vmdk"  # an adapter's file
        other_old = work / "layerbot-build-otherhost-1-abcd1234"
        other_new = work / "layerbot-build-otherhost-2-abcd1234"
        legacy_old = cache / "tmp" / "tmpq1w2e3r4.img"
        legacy_new = cache / "tmp" / "tmpzzzzzzzz.img"
        unrelated = work / "notes"
        for d in (live_dir, own_dir, reused_dir, dead_dir, other_old, other_new, unrelated):
            (d / "layers").mkdir(parents=True)
            (d / "layers" / "f").write_bytes(b"x")
        for f in (live_tmp, dead_tmp, dead_digest, dead_spool, legacy_old, legacy_new):
            f.write_bytes(b"x")
        old = time.time() - STALE_AFTER - 60
        for p in (own_dir, reused_dir, other_old, legacy_old, unrelated):
            os.utime(p, (old, old))
        removed = sweep_stale(work, cache)
        assert sorted(removed) == sorted(
            [reused_dir, dead_dir, dead_tmp, dead_digest, dead_spool, other_old, legacy_old])
        for kept in (live_dir, own_dir, live_tmp, other_new, legacy_new, unrelated):
            assert kept.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_stale(tmp_path / "missing", tmp_path / "missing") == []


def test_host_names_outside_the_name_alphabet_still_identify_the_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compositor import sweep

    monkeypatch.setattr(sweep.socket, "gethostname", lambda: "build_01 (lab)")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    work = tmp_path / "work"
    stale = work / f"layerbot-build-{host_name()}-{dead.pid}-abcd1234"
    stale.mkdir(parents=True)
    assert host_name() == "build-01--lab"
    assert sweep_stale(work, tmp_path / "cache") == [stale]
