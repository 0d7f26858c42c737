"""Connector placement settings against vcsim: a nested folder, a resource pool, a network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.base import NotFoundError, publish
from adapters.vsphere import Clients, VSpherePublished
from adapters.vsphere.inventory import PlacementPathError

from .conftest import Recorder, VcSim, connector, find_vms

pytestmark = pytest.mark.timeout(120)


def make_adapter(sim: VcSim, clients: Clients | None = None,
                 **overrides: object):  # type: ignore[no-untyped-def]
    cfg = config_model("vsphere").model_validate(connector(sim, **overrides))
    return create(cfg, clients or Clients(wait_seconds=2))


def make_folders(sim: VcSim, *names: str) -> Any:
    """Nested VM folders below DC0's VM folder; returns the innermost."""
    folder = sim.si().content.searchIndex.FindByInventoryPath("DC0/vm")
    for name in names:
        folder = folder.CreateFolder(name)
    return folder


def make_pool(sim: VcSim, name: str, parent: Any = None) -> Any:
    from pyVmomi import vim

    def alloc() -> Any:
        return vim.ResourceAllocationInfo(reservation=0, expandableReservation=True, limit=-1,
                                          shares=vim.SharesInfo(level="normal", shares=0))

    if parent is None:
        parent = sim.si().content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0").resourcePool
    return parent.CreateResourcePool(name, vim.ResourceConfigSpec(cpuAllocation=alloc(),
                                                                  memoryAllocation=alloc()))


def nics(vm: Any) -> list[Any]:
    from pyVmomi import vim

    return [d for d in vm.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)]


@pytest.mark.parametrize("network", ["VM Network", "DC0_DVPG0"])
async def test_folder_pool_and_network_are_used(vcsim: VcSim, vc_env: None, raw_disk: Path,
                                                network: str) -> None:
    from pyVmomi import vim

    folder = make_folders(vcsim, "Layering", "Published")
    make_folders(vcsim, "Published")  # same leaf name elsewhere: the path decides
    pool = make_pool(vcsim, "Layering")
    adapter = make_adapter(vcsim, folder="Layering/Published", resource_pool="Layering",
                           network=network)
    await publish(adapter, Recorder().context(raw_disk, "placed"))
    await adapter.close()

    [vm] = find_vms(vcsim, "placed")
    assert vm.parent == folder
    assert vm.resourcePool == pool
    assert [n.name for n in vm.network] == [network]
    [nic] = nics(vm)
    assert isinstance(nic, vim.vm.device.VirtualVmxnet3)
    net = next(n for n in vcsim.si().content.searchIndex.FindByInventoryPath("DC0").network
               if n.name == network)
    if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
        assert isinstance(nic.backing,
                          vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
        assert nic.backing.port.portgroupKey == net.key
    else:
        assert isinstance(nic.backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo)
        assert nic.backing.deviceName == network and nic.backing.network == net
    [disk] = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert disk.capacityInKB == 64 * 1024


async def test_template_in_a_nested_folder_has_its_disk(vcsim: VcSim, vc_env: None,
                                                        raw_disk: Path) -> None:
    from pyVmomi import vim

    folder = make_folders(vcsim, "Templates", "Desktops")
    adapter = make_adapter(vcsim, mode="template", folder="/Templates/Desktops/",
                           datastore="LocalDS_1")
    published = await publish(adapter, Recorder().context(raw_disk, "tpl-placed"))
    await adapter.close()
    assert published.expect(VSpherePublished).mode == "template"

    [tpl] = find_vms(vcsim, "tpl-placed")
    assert tpl.config.template and tpl.parent == folder
    disks: list[Any] = [d for d in tpl.config.hardware.device
                        if isinstance(d, vim.vm.device.VirtualDisk)]
    [disk] = disks
    assert disk.capacityInKB == 64 * 1024
    assert disk.backing.fileName.startswith("[LocalDS_1] tpl-placed/")
    [ds] = tpl.datastore
    assert ds.name == "LocalDS_1"
    # vcsim creates the disk files but discards the uploaded bytes (ServeNFC writes to
    # io.Discard), so only their presence can be checked
    assert sorted(p.name for p in (Path(ds.info.url) / "tpl-placed").glob("*.vmdk")) == [
        "disk-0-flat.vmdk", "disk-0.vmdk"]


async def test_missing_folder_and_pool_are_named(vcsim: VcSim, vc_env: None,
                                                 raw_disk: Path) -> None:
    make_folders(vcsim, "Layering")
    adapter = make_adapter(vcsim, folder="Layering/Nope", resource_pool="NoPool")
    with pytest.raises(NotFoundError) as info:
        await publish(adapter, Recorder().context(raw_disk, "misplaced"))
    await adapter.close()
    assert str(info.value) == ("vSphere: not found in datacenter 'DC0': resource pool 'NoPool', "
                               "VM folder 'Layering/Nope'")
    assert find_vms(vcsim, "misplaced") == []


async def test_template_nic_on_a_distributed_port_group(vcsim: VcSim, vc_env: None,
                                                         raw_disk: Path) -> None:
    [src] = find_vms(vcsim, "DC0_C0_RP0_VM0")  # its NIC is on DC0_DVPG0
    adapter = make_adapter(vcsim, network=None, vm_template="DC0_C0_RP0_VM0")
    try:
        await publish(adapter, Recorder().context(raw_disk, "dvpg-copy"))
    finally:
        await adapter.close()
    [vm] = find_vms(vcsim, "dvpg-copy")
    assert [n.name for n in vm.network] == [n.name for n in src.network]


@pytest.mark.parametrize(("folder", "pool"), [
    ("vm/Layering/Published", "host/DC0_C0/Resources/Layering"),  # govc, relative to DC0
    ("/DC0/vm/Layering/Published", "/DC0/host/DC0_C0/Resources/Layering/Child"),  # absolute
])
async def test_paths_as_govc_ansible_and_powercli_write_them(
        vcsim: VcSim, vc_env: None, raw_disk: Path, folder: str, pool: str) -> None:
    target = make_folders(vcsim, "Layering", "Published")
    layering = make_pool(vcsim, "Layering")
    child = make_pool(vcsim, "Child", parent=layering)
    adapter = make_adapter(vcsim, folder=folder, resource_pool=pool)
    await publish(adapter, Recorder().context(raw_disk, "govc-placed"))
    await adapter.close()
    [vm] = find_vms(vcsim, "govc-placed")
    assert vm.parent == target
    assert vm.resourcePool == (child if pool.endswith("/Child") else layering)


async def test_a_path_in_another_datacenter_is_refused(vcsim: VcSim, vc_env: None,
                                                       raw_disk: Path) -> None:
    vcsim.si().content.rootFolder.CreateDatacenter("DC1")
    make_folders(vcsim, "Layering")
    for settings, text in [
        ({"folder": "/DC1/vm/Layering"},
         "vSphere: folder '/DC1/vm/Layering' is in datacenter 'DC1', but the connector's "
         "datacenter is 'DC0' (datacenters on this vCenter: DC0, DC1)"),
        ({"resource_pool": "/DC1/host/C1/Resources/Layering"},
         "vSphere: resource_pool '/DC1/host/C1/Resources/Layering' is in datacenter 'DC1'"),
    ]:
        adapter = make_adapter(vcsim, **settings)
        with pytest.raises(PlacementPathError) as info:
            await publish(adapter, Recorder().context(raw_disk, "elsewhere"))
        await adapter.close()
        assert str(info.value).startswith(text)
    assert find_vms(vcsim, "elsewhere") == []


async def test_a_pool_of_another_compute_resource_is_refused(vcsim: VcSim, vc_env: None,
                                                             raw_disk: Path) -> None:
    adapter = make_adapter(vcsim, resource_pool="host/DC0_H0/Resources")  # a standalone host's
    with pytest.raises(PlacementPathError, match="resource_pool 'host/DC0_H0/Resources' belongs to "
                       "'DC0/host/DC0_H0', not to the connector's cluster 'DC0_C0'"):
        await publish(adapter, Recorder().context(raw_disk, "other-cluster"))
    await adapter.close()
