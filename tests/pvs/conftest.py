"""The PVS adapter against the Samba peer (the store's share) and the cmdlet double (the
PowerShell runner), a VHDX disk, and connectors pointed at both."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import ConnectorConfig, PublishContext
from adapters.blocking import SessionPool
from adapters.pvs import Adapter, Clients, Config
from adapters.resources import Resource
from adapters.windows_remote.powershell import RemoteClients
from tests.hyperv.conftest import QUICK_SMB_RETRY
from tests.nutanix.conftest import prism, prism_ca
from tests.windows_remote.samba_peer import SMB_PASSWORD_ENV, SMB_USER_ENV, SambaPeer, samba, smb_env
from tests.windows_remote.served_double import DoubleClient

from .pvs_double import PvsDouble

__all__ = ["prism", "prism_ca", "samba", "smb_env"]

#: every PowerShell-special character, in a template name and an image (file) name
HOSTILE_TEMPLATE = "o'brien \"gold\" `n $(Remove-Item C:\\ -Recurse)"
HOSTILE_IMAGE = "o'brien-$(calc)-`n-20261202-101010-abc123"


@pytest.fixture
def farm(smb_env: SambaPeer) -> PvsDouble:
    return PvsDouble(store_dir=smb_env.share_dir)


def pvs_config(samba: SambaPeer, **overrides: Any) -> Config:
    settings = {"type": "pvs", "server": "pvs01.test", "user_env": SMB_USER_ENV,
                "password_env": SMB_PASSWORD_ENV, "store": "Store 1", "site": "Site's 1",
                "store_share": samba.unc, "smb_port": samba.port, "license_mode": "kms",
                "write_cache_size_mb": 4096, **overrides}
    return config_model("pvs").model_validate(settings)  # type: ignore[return-value]


def clients(farm: PvsDouble | DoubleClient, hypervisor: object | None = None) -> Clients:
    remote = RemoteClients(connect=farm.connect, timeout=10, chunk_size=1 << 20,
                           poll=(0.02, 0.1), sessions=SessionPool(), smb_retry=QUICK_SMB_RETRY,
                           read_retry=QUICK_SMB_RETRY)
    return Clients(remote=remote, hypervisor=hypervisor)


def served_clients() -> Clients:
    """A worker process's short clients, its runspaces on the farm double the test serves (the
    chaos runs: tests/faults/chaos_worker.py)."""
    return clients(DoubleClient.from_environment())


def make_adapter(farm: PvsDouble, samba: SambaPeer, hypervisor: ConnectorConfig | None = None,
                 hypervisor_clients: object | None = None, **overrides: Any) -> Adapter:
    cfg = pvs_config(samba, **({"hypervisor": "ahv"} if hypervisor else {}), **overrides)
    if hypervisor is not None:
        cfg.link("hypervisor", hypervisor)  # what the catalog does at load
    return create(cfg, clients(farm, hypervisor_clients))  # type: ignore[return-value]


def vhdx_disk(path: Path, mib: int = 8) -> Path:
    """A VHDX with random data all through (what the compositor gives a pvs target)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        f.write(os.urandom(mib << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw, path], check=True)
    raw.unlink()
    return path


def context(artifact: Path, name: str, notes: list[tuple[float, str]] | None = None,
            template: str = "win10", resources: list[Resource] | None = None,
            scratch: Path | None = None) -> PublishContext:
    async def progress(fraction: float, note: str) -> None:
        if notes is not None:
            notes.append((fraction, note))

    return PublishContext(task_id="t0c0ffee", template=template, image_name=name,
                          artifact=artifact, artifact_format="vhdx", virtual_size=8 << 20,
                          progress=progress, resources=list(resources or []), scratch_dir=scratch)
