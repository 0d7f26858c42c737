"""The generated OVF descriptor and hardware copied from a VM template."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from adapters.vsphere.ovf import STREAM_OPTIMIZED, Hardware, hardware_from_config, ovf_descriptor

OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


def test_descriptor_describes_one_stream_optimized_disk() -> None:
    text = ovf_descriptor("win10 <&> office", 64 * 2**20 + 1, Hardware(num_cpus=4), "VM Network")
    root = ET.fromstring(text)
    disk = root.find(f"{OVF}DiskSection/{OVF}Disk")
    assert disk is not None
    assert disk.get(f"{OVF}format") == STREAM_OPTIMIZED
    assert disk.get(f"{OVF}capacity") == "65"  # MiB, rounded up
    assert disk.get(f"{OVF}capacityAllocationUnits") == "byte * 2^20"
    items = root.findall(f".//{OVF}VirtualHardwareSection/{OVF}Item")
    by_type = {i.findtext(f"{RASD}ResourceType"): i for i in items}
    assert by_type["3"].findtext(f"{RASD}VirtualQuantity") == "4"
    assert by_type["6"].findtext(f"{RASD}ResourceSubType") == "lsilogic"
    assert by_type["10"].findtext(f"{RASD}Connection") == "VM Network"
    assert by_type["17"].findtext(f"{RASD}Parent") == by_type["6"].findtext(f"{RASD}InstanceID")
    for item in items:  # CIM requires the rasd elements in alphabetical order
        tags = [child.tag for child in item]
        assert tags == sorted(tags)
    assert root.find(f"{OVF}VirtualSystem/{OVF}Name").text == "win10 <&> office"  # type: ignore[union-attr]


def test_no_network_no_nic() -> None:
    root = ET.fromstring(ovf_descriptor("x", 2**20, Hardware(), None))
    types = [i.findtext(f"{RASD}ResourceType") for i in root.iter(f"{OVF}Item")]
    assert "10" not in types
    assert root.find(f"{OVF}NetworkSection") is None


def test_hardware_from_template_config() -> None:
    from pyVmomi import vim

    nic = vim.vm.device.VirtualE1000e(
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="Desktops"))
    config = vim.vm.ConfigInfo(
        firmware="bios", guestId="windows9_64Guest", version="vmx-19",
        hardware=vim.vm.VirtualHardware(numCPU=4, numCoresPerSocket=2, memoryMB=8192,
                                        device=[vim.vm.device.ParaVirtualSCSIController(), nic]))
    hw = hardware_from_config(config)
    assert hw == Hardware(num_cpus=4, cores_per_socket=2, memory_mb=8192, firmware="bios",
                          guest_id="windows9_64Guest", version="vmx-19", nic_type="E1000e",
                          scsi_type="VirtualSCSI", template_network="Desktops")
