"""The adapters the contract suite runs against. A new adapter adds itself here: one fixture
that yields a :class:`Target`, and its name in ``TARGETS``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import Adapter, DiskFormat
from adapters.blocking import SessionPool
from adapters.local import LocalUpload
from adapters.resources import Resource
from adapters.vsphere import Clients
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import Tls, arm_double, arm_tls, clients
from tests.azure.arm_fixtures import config as azure_config
from tests.gcp.compute_double import ComputeDouble
from tests.gcp.compute_fixtures import PROJECT, TOKEN, object_check
from tests.gcp.conftest import BUCKET, emulator, gcs
from tests.gcp.test_gcp_publish import adapter_for
from tests.hyperv.conftest import data_disk, hyperv_config
from tests.hyperv.conftest import short_clients as hyperv_clients
from tests.hyperv.hyperv_double import HyperVDouble
from tests.nutanix.conftest import FAST, prism, prism_ca, qcow2_disk
from tests.nutanix.conftest import connector as nutanix_connector
from tests.nutanix.prism_double import PrismDouble
from tests.pvs.conftest import clients as pvs_clients
from tests.pvs.conftest import pvs_config, vhdx_disk
from tests.pvs.pvs_double import PvsDouble
from tests.qemu.test_qemu_adapter import TINY
from tests.qemu.test_qemu_adapter import raw_disk as qemu_raw_disk
from tests.vsphere.conftest import connector, find_vms, make_raw_disk, vc_env, vcsim, vcsim_binary
from tests.windows_remote.samba_peer import SambaPeer, samba, smb_env
from tests.xenserver.conftest import dynamic_vhd, short_clients, xapi, xen_config, xen_env

__all__ = ["arm_double", "arm_tls", "emulator", "gcs", "prism", "prism_ca", "samba", "smb_env",
           "vc_env", "vcsim", "vcsim_binary", "xapi", "xen_env"]

TARGETS = ["local", "qemu", "vsphere", "azure", "azure-mcs", "gcp", "nutanix", "xenserver", "hyperv",
           "pvs"]


@dataclass
class Target:
    #: a new adapter for the same connector (a runner that takes a task over makes its own)
    make: Callable[[], Adapter]
    artifact: Path
    artifact_format: DiskFormat
    #: what exists at the platform for the image ``name`` (empty: nothing left)
    leftovers: Callable[[str], list[Any]]
    #: whether a recorded STAGING resource still exists at the platform (None: the adapter
    #: records no STAGING resource)
    staging_exists: Callable[[Resource], bool] | None = None
    #: where the adapters made by ``make`` share their sessions (None: no sessions)
    sessions: SessionPool[Any] | None = None


def _files(root: Path) -> Callable[[str], list[Any]]:
    return lambda name: sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _data_disk(path: Path, size_mib: int = 48) -> Path:
    """Data all through (random, so a resumed copy is checked byte for byte)."""
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    return path


@pytest.fixture
async def local_target(tmp_path: Path) -> AsyncIterator[Target]:
    cfg = config_model("local").model_validate({"type": "local", "path": tmp_path / "out",
                                                 "format": "raw"})
    def staging_exists(resource: Resource) -> bool:
        assert isinstance(resource, LocalUpload), resource
        return resource.path.exists()

    yield Target(lambda: create(cfg), _data_disk(tmp_path / "disk.raw"), "raw",
                 _files(tmp_path / "out"), staging_exists)


@pytest.fixture
async def qemu_target(tmp_path: Path) -> AsyncIterator[Target]:
    built = await qemu_raw_disk(tmp_path, TINY)
    root = tmp_path / "vms"
    cfg = config_model("qemu").model_validate({"type": "qemu", "path": root, "accel": "tcg",
                                                "memory_mb": 128, "cpus": 1})
    yield Target(lambda: create(cfg), built.path, "raw",
                 lambda name: sorted(root.iterdir()) if root.exists() else [])


@pytest.fixture
async def vsphere_target(tmp_path: Path, vcsim: Any, vc_env: None) -> AsyncIterator[Target]:
    cfg = config_model("vsphere").model_validate(connector(vcsim))
    clients = Clients(sessions=SessionPool())  # this test's own: its entries can be checked
    yield Target(lambda: create(cfg, clients), make_raw_disk(tmp_path / "disk.img"), "raw",
                 lambda name: find_vms(vcsim, name), sessions=clients.sessions)


def _fixed_vhd(path: Path, size_mib: int = 32) -> Path:
    """Data all through, plus the footer (what the compositor gives an Azure target)."""
    _data_disk(path, size_mib)
    with open(path, "ab") as f:
        f.write(b"conectix" + os.urandom(504))
    return path


def _azure_target(kind: str, double: ArmDouble, tls: Tls, tmp_path: Path) -> Target:
    cfg = azure_config(double, kind)

    def leftovers(name: str) -> list[Any]:  # the double is this test's own: all of it
        made = [*double.disks.values(), *double.images.values(), *double.versions.values()]
        return [r["id"] for r in made]

    def staging_exists(resource: Resource) -> bool:
        return f"layering/{getattr(resource, 'name', '')}".lower() in double.disks

    return Target(lambda: create(cfg, clients(double, tls)), _fixed_vhd(tmp_path / "disk.vhd"),
                  "vhd", leftovers, staging_exists)


@pytest.fixture
async def azure_target(tmp_path: Path, arm_double: ArmDouble, arm_tls: Tls) -> AsyncIterator[Target]:
    yield _azure_target("azure", arm_double, arm_tls, tmp_path)


@pytest.fixture
async def azure_mcs_target(tmp_path: Path, arm_double: ArmDouble, arm_tls: Tls
                           ) -> AsyncIterator[Target]:
    yield _azure_target("azure-mcs", arm_double, arm_tls, tmp_path)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    name = request.param.replace("-", "_")
    return request.getfixturevalue(f"{name}_target")  # type: ignore[no-any-return]


@pytest.fixture
async def gcp_target(tmp_path: Path, gcs: Any, emulator: Any) -> AsyncIterator[Target]:
    from adapters.gcp.storage import GcsUpload

    double = await ComputeDouble(PROJECT, token=TOKEN).start()
    double.object_exists = object_check(gcs.url)
    first = adapter_for(double, gcs)
    clients = first.clients
    await first.close()

    def objects() -> list[str]:
        # the emulator's own state, not its HTTP API: a blocking HTTP call from this event
        # loop's thread would go through the proxy that runs on this very loop
        found, _ = emulator.storage.get_file_list(BUCKET)
        return sorted(o["name"] for o in found)

    def staging_exists(resource: Resource) -> bool:
        assert isinstance(resource, GcsUpload), resource
        return resource.name in objects()

    try:
        yield Target(lambda: create(first.config, clients), _data_disk(tmp_path / "disk.tar.gz", 3),
                     "gce-tar", lambda name: [*(n for n in double.images if n == name), *objects()],
                     staging_exists, sessions=clients.sessions)
    finally:
        await double.close()


@pytest.fixture
async def nutanix_target(tmp_path: Path, prism: PrismDouble, prism_ca: Any) -> AsyncIterator[Target]:
    cfg = nutanix_connector(prism, prism_ca[1])

    def leftovers(name: str) -> list[Any]:  # the double is this test's own: all of it
        return [*prism.images, *prism.vms]

    def staging_exists(resource: Resource) -> bool:
        return getattr(resource, "uuid", None) in prism.images

    yield Target(lambda: create(cfg, FAST), qcow2_disk(tmp_path / "disk.qcow2", 3), "qcow2",
                 leftovers, staging_exists)


@pytest.fixture
async def xenserver_target(tmp_path: Path, xapi: Any, xen_env: None) -> AsyncIterator[Target]:
    cfg = xen_config(xapi)
    clients = short_clients()
    vhd, _ = dynamic_vhd(tmp_path / "disk.vhd", 32)  # random data: the file is its virtual size and more
    yield Target(lambda: create(cfg, clients), vhd, "vhd-dynamic", xapi.leftovers,
                 sessions=clients.pool)


@pytest.fixture
async def pvs_target(tmp_path: Path, smb_env: SambaPeer) -> AsyncIterator[Target]:
    farm = PvsDouble(store_dir=smb_env.share_dir)
    cfg = pvs_config(smb_env)
    clients = pvs_clients(farm)

    def leftovers(name: str) -> list[Any]:  # the share and the farm are this test's own
        return [*smb_env.files(), *farm.disks]

    yield Target(lambda: create(cfg, clients), vhdx_disk(tmp_path / "disk.vhdx", 32), "vhdx",
                 leftovers, sessions=clients.remote.sessions)


@pytest.fixture
async def hyperv_target(tmp_path: Path, smb_env: SambaPeer) -> AsyncIterator[Target]:
    double = HyperVDouble("D:\\Hyper-V\\layerbot", smb_env.share_dir)
    cfg = hyperv_config(smb_env)
    clients = hyperv_clients(double)
    yield Target(lambda: create(cfg, clients), data_disk(tmp_path / "disk.vhdx", 24), "vhdx",
                 lambda name: [*double.vms, *smb_env.files()], sessions=clients.pool)
