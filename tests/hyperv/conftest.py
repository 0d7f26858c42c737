"""A Hyper-V connector pointed at the Samba peer, with the PowerShell double as its runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model
from adapters.blocking import SessionPool
from adapters.hyperv import Clients, Config
from adapters.retry import RetryPolicy
from tests.windows_remote.samba_peer import SMB_PASSWORD_ENV, SMB_USER_ENV, SambaPeer, samba, smb_env
from tests.windows_remote.served_double import DoubleClient

from .hyperv_double import HyperVDouble

__all__ = ["samba", "smb_env"]

LOCAL_PATH = "D:\\Hyper-V\\layerbot"
#: an SMB copy whose connection was lost (a query after a dropped connection) starts again at once
QUICK_SMB_RETRY = RetryPolicy(attempts=3, budget=30.0, first_delay=0.05, max_delay=0.1)


@pytest.fixture
def hyperv(smb_env: SambaPeer) -> HyperVDouble:
    return HyperVDouble(LOCAL_PATH, smb_env.share_dir)


def hyperv_config(samba: SambaPeer, **overrides: Any) -> Config:
    settings = {"type": "hyperv", "host": "hv01.lab.example", "user_env": SMB_USER_ENV,
                "password_env": SMB_PASSWORD_ENV, "share": samba.unc, "share_local_path": LOCAL_PATH,
                "smb_port": samba.port, "switch": "LabSwitch", "generation": 2, "memory_mb": 4096,
                "cpus": 2, **overrides}
    return config_model("hyperv").model_validate(settings)  # type: ignore[return-value]


def short_clients(double: HyperVDouble | DoubleClient) -> Clients:
    return Clients(connect=double.connect, timeout=10, chunk_size=1 << 20, poll=(0.02, 0.1),
                   sessions=SessionPool(), smb_retry=QUICK_SMB_RETRY, read_retry=QUICK_SMB_RETRY)


def served_clients() -> Clients:
    """A worker process's short clients, its runspaces on the double the test serves (the
    chaos runs: tests/faults/chaos_worker.py)."""
    return short_clients(DoubleClient.from_environment())


def data_disk(path: Path, size_mib: int = 16) -> Path:
    """Random data with runs of zeros (the copy skips those)."""
    with open(path, "wb") as f:
        for i in range(size_mib):
            f.write(bytes(1 << 20) if i % 4 == 2 else os.urandom(1 << 20))
    return path
