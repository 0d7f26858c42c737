"""The OVF descriptor layerbot imports, and the hardware it describes.

The descriptor names one streamOptimized disk on an LSI Logic controller, the CPU and
memory, and a NIC when a network is set. Hardware defaults suit a composited GPT disk
(UEFI); with ``vm_template`` the CPU, memory, firmware, guest OS, NIC and controller
type are copied from that VM (:func:`hardware_from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import quoteattr

MIB = 1024 * 1024
#: extraConfig key naming the layerbot task that imported a VM: cleanup finds by it (and the
#: VM's name) a VM whose ImportVApp answer was never recorded
TASK_KEY = "layerbot.task"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
_SCSI = {
    "VirtualLsiLogicController": "lsilogic",
    "ParaVirtualSCSIController": "VirtualSCSI",
    "VirtualBusLogicController": "buslogic",
    "VirtualLsiLogicSASController": "lsilogicsas",
}
_NICS = {
    "VirtualVmxnet3": "VmxNet3",
    "VirtualE1000e": "E1000e",
    "VirtualE1000": "E1000",
    "VirtualVmxnet2": "VmxNet2",
}


@dataclass(frozen=True)
class Hardware:
    num_cpus: int = 2
    cores_per_socket: int = 1
    memory_mb: int = 4096
    firmware: str = "efi"
    guest_id: str = "otherGuest64"
    version: str = "vmx-14"
    nic_type: str = "VmxNet3"
    scsi_type: str = "lsilogic"
    #: Network name of the template's first NIC (used when the connector names none).
    template_network: str | None = None
    #: Key of the distributed port group of that NIC, whose backing carries no name.
    template_portgroup_key: str | None = None


def _short(obj: Any) -> str:
    return type(obj).__name__.rsplit(".", 1)[-1]


def hardware_from_config(config: Any, base: Hardware = Hardware()) -> Hardware:
    """Hardware copied from a VM's ``config`` (vim.vm.ConfigInfo) of the vm_template."""
    hw = config.hardware
    nic_type, scsi_type, network, portgroup = base.nic_type, base.scsi_type, None, None
    for device in hw.device or []:
        kind = _short(device)
        if kind in _NICS and network is None and portgroup is None:
            nic_type = _NICS[kind]
            backing = device.backing
            port = getattr(backing, "port", None)  # a distributed port group: no name here
            portgroup = getattr(port, "portgroupKey", None) if port is not None else None
            if portgroup is None:
                network = getattr(backing, "deviceName", None) or getattr(
                    device.deviceInfo, "summary", None)
        elif kind in _SCSI and scsi_type == base.scsi_type:
            scsi_type = _SCSI[kind]
    return replace(
        base,
        num_cpus=hw.numCPU or base.num_cpus,
        cores_per_socket=hw.numCoresPerSocket or base.cores_per_socket,
        memory_mb=hw.memoryMB or base.memory_mb,
        firmware=config.firmware or base.firmware,
        guest_id=config.guestId or base.guest_id,
        version=config.version or base.version,
        nic_type=nic_type,
        scsi_type=scsi_type,
        template_network=network,
        template_portgroup_key=portgroup,
    )


def ovf_descriptor(name: str, capacity: int, hw: Hardware, network: str | None,
                   disk_href: str = "disk.vmdk") -> str:
    """OVF 1.0 envelope for one VM with one disk of ``capacity`` bytes (rounded up to MiB)."""
    cap_mib = -(-capacity // MIB)
    net_section = nic_item = ""
    if network:
        net_section = (
            f"  <NetworkSection><Info>Networks</Info>"
            f"<Network ovf:name={quoteattr(network)}><Description>VM network</Description>"
            f"</Network></NetworkSection>\n"
        )
        nic_item = _item(
            5, 10, "ethernet0", subtype=hw.nic_type,
            extra=["<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>",
                   f"<rasd:Connection>{_text(network)}</rasd:Connection>"])
    items = "".join([
        _item(1, 3, f"{hw.num_cpus} virtual CPU(s)", quantity=hw.num_cpus,
              units="hertz * 10^6"),
        _item(2, 4, f"{hw.memory_mb} MB of memory", quantity=hw.memory_mb, units="byte * 2^20"),
        _item(3, 6, "SCSI controller 0", subtype=hw.scsi_type,
              extra=["<rasd:Address>0</rasd:Address>"]),
        _item(4, 17, "disk0", extra=[
            "<rasd:AddressOnParent>0</rasd:AddressOnParent>",
            "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
            "<rasd:Parent>3</rasd:Parent>"]),
        nic_item,
    ])
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href={quoteattr(disk_href)} ovf:id="file1"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{cap_mib}"
      ovf:capacityAllocationUnits="byte * 2^20" ovf:format="{STREAM_OPTIMIZED}"/>
  </DiskSection>
{net_section}  <VirtualSystem ovf:id={quoteattr(name)}>
    <Info>Layered image published by layerbot</Info>
    <Name>{_text(name)}</Name>
    <OperatingSystemSection ovf:id="1" vmw:osType={quoteattr(hw.guest_id)}>
      <Info>Guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{_text(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{_text(hw.version)}</vssd:VirtualSystemType>
      </System>
{items}      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value={quoteattr(hw.firmware)}/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _item(instance: int, rtype: int, name: str, *, subtype: str | None = None,
          quantity: int | None = None, units: str | None = None,
          extra: list[str] | None = None) -> str:
    # CIM_ResourceAllocationSettingData elements must appear in alphabetical order.
    parts = [f"<rasd:ElementName>{_text(name)}</rasd:ElementName>",
             f"<rasd:InstanceID>{instance}</rasd:InstanceID>",
             f"<rasd:ResourceType>{rtype}</rasd:ResourceType>"]
    if subtype:
        parts.append(f"<rasd:ResourceSubType>{_text(subtype)}</rasd:ResourceSubType>")
    if units:
        parts.append(f"<rasd:AllocationUnits>{_text(units)}</rasd:AllocationUnits>")
    if quantity is not None:
        parts.append(f"<rasd:VirtualQuantity>{quantity}</rasd:VirtualQuantity>")
    return "      <Item>" + "".join(sorted(parts + (extra or []))) + "</Item>\n"


def patch_import_spec(spec: Any, hw: Hardware) -> None:
    """Set what OVF cannot carry portably (firmware, cores per socket, guest id)."""
    config = spec.configSpec
    config.firmware = hw.firmware
    config.numCoresPerSocket = hw.cores_per_socket
    config.guestId = hw.guest_id


def mark_task(spec: Any, task_id: str) -> None:
    """Name the importing task in the VM's extraConfig (see :data:`TASK_KEY`)."""
    from pyVmomi import vim

    config = spec.configSpec
    config.extraConfig = [*(config.extraConfig or []),
                          vim.option.OptionValue(key=TASK_KEY, value=task_id)]
