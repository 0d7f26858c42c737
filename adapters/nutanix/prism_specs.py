"""Where a publish goes (cluster, storage container, subnet, looked up by name) and the v3
request bodies of the image and the VM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import NotFoundError, PlatformError
from adapters.nutanix.nutanix_config import BootType, Config
from adapters.nutanix.prism_client import PrismClient
from adapters.nutanix.prism_errors import PLATFORM


@dataclass(frozen=True)
class Placement:
    cluster: str
    container: str
    subnet: str
    cpus: int
    memory_mib: int
    boot_type: BootType


def _one(found: list[dict[str, Any]], key: str, name: str, where: str = "") -> str:
    if not found:
        raise NotFoundError(f"{PLATFORM}: {key} {name!r} does not exist{where} "
                            f"(connector setting {key})")
    uuid = (found[0].get("metadata") or {}).get("uuid")
    if not isinstance(uuid, str):
        raise PlatformError(f"{PLATFORM}: {key} {name!r}: Prism's answer has no metadata.uuid")
    return uuid


def _group_value(entity: dict[str, Any], attribute: str) -> str | None:
    for item in entity.get("data") or []:
        if item.get("name") == attribute:
            for value in item.get("values") or []:
                for v in value.get("values") or []:
                    return str(v)
    return None


async def container_uuid(prism: PrismClient, name: str, cluster: str, cluster_name: str) -> str:
    """v3 has no storage-container kind: the groups API lists them, with their cluster."""
    answer = await prism.call("POST", "/groups", {
        "entity_type": "storage_container",
        "group_member_attributes": [{"attribute": "container_name"},
                                    {"attribute": "cluster"}],
        "filter_criteria": f"container_name=={name}",
        "group_member_count": 50,
    }, doing=f"looking up storage container {name!r}", idempotent=True)
    for group in answer.get("group_results") or []:
        for entity in group.get("entity_results") or []:
            if (_group_value(entity, "container_name") == name
                    and _group_value(entity, "cluster") == cluster and entity.get("entity_id")):
                return str(entity["entity_id"])
    raise NotFoundError(f"{PLATFORM}: container {name!r} does not exist on cluster "
                        f"{cluster_name!r} (connector setting container)")


async def placement(prism: PrismClient, config: Config) -> Placement:
    cluster = _one(await prism.find("cluster", "name", config.cluster), "cluster", config.cluster)
    subnet = _one(await prism.find("subnet", "name", config.subnet), "subnet", config.subnet)
    container = await container_uuid(prism, config.container, cluster, config.cluster)
    cpus, memory, boot = config.cpus, config.memory_mib, config.boot_type
    if config.vm_template:
        found = await prism.find("vm", "vm_name", config.vm_template)
        _one(found, "vm_template", config.vm_template)
        resources = (found[0].get("spec") or {}).get("resources") or {}
        cpus = int(resources.get("num_sockets") or 1) * int(resources.get("num_vcpus_per_socket") or 1)
        memory = int(resources.get("memory_size_mib") or memory)
        boot = boot or (resources.get("boot_config") or {}).get("boot_type")
    return Placement(cluster, container, subnet, cpus, memory, boot or "UEFI")


def image_body(uuid: str, name: str, task_id: str, where: Placement) -> dict[str, Any]:
    return {
        "metadata": {"kind": "image", "uuid": uuid},
        "spec": {
            "name": name,
            "description": f"layerbot task {task_id}",
            "resources": {
                "image_type": "DISK_IMAGE",
                "initial_placement_ref_list": [{"kind": "cluster", "uuid": where.cluster}],
            },
        },
    }


def vm_body(uuid: str, name: str, task_id: str, image: str, where: Placement) -> dict[str, Any]:
    return {
        "metadata": {"kind": "vm", "uuid": uuid, "spec_version": 0},
        "spec": {
            "name": name,
            "description": f"layerbot task {task_id}",
            "cluster_reference": {"kind": "cluster", "uuid": where.cluster},
            "resources": {
                "power_state": "OFF",
                "num_sockets": where.cpus,
                "num_vcpus_per_socket": 1,
                "memory_size_mib": where.memory_mib,
                "boot_config": {"boot_type": where.boot_type},
                "disk_list": [{
                    "device_properties": {"device_type": "DISK",
                                          "disk_address": {"adapter_type": "SCSI",
                                                           "device_index": 0}},
                    "data_source_reference": {"kind": "image", "uuid": image},
                    "storage_config": {"storage_container_reference": {
                        "kind": "storage_container", "uuid": where.container}},
                }],
                "nic_list": [{"subnet_reference": {"kind": "subnet", "uuid": where.subnet}}],
            },
        },
    }
