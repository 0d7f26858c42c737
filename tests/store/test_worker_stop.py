"""`layerbot worker` stops cleanly on SIGTERM (systemd, docker stop) as on Ctrl-C: exit 0, its
tasks left for another runner."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.store.workers import machine, start_worker, stop_workers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stops_cleanly_on_sigterm_and_sigint(
    sig: signal.Signals, catalog_dir: Path, tmp_path: Path,
) -> None:
    config = machine(tmp_path / "m1", catalog_dir / "layers", tmp_path / "published")
    worker = start_worker(config, str(tmp_path / "tasks.db"), tmp_path / "worker.log")
    assert stop_workers([worker], sig) == [0], worker.log.read_text()[-2000:]
    assert "stopped; unfinished tasks are left for another runner" in worker.log.read_text()
