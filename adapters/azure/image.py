"""The managed image made from the uploaded disk (``type: azure``)."""

from __future__ import annotations

from typing import Any

from adapters.azure.arm import Arm
from adapters.azure.arm_errors import AzureNotFoundError
from adapters.azure.azure_config import AzureConfig
from adapters.azure.settle import settled


def image_body(cfg: AzureConfig, disk_id: str) -> dict[str, Any]:
    """Image_CreateFromAManagedDisk.json's shape."""
    os_disk = {"osType": cfg.os_type, "osState": cfg.os_state, "managedDisk": {"id": disk_id},
               "storageAccountType": cfg.disk_sku}
    return {"location": cfg.location, "tags": cfg.tags,
            "properties": {"storageProfile": {"osDisk": os_disk},
                           "hyperVGeneration": cfg.hyper_v_generation}}


async def create(arm: Arm, name: str, disk_id: str) -> str:
    """Create the image and wait for Succeeded; its id."""
    cfg = arm.cfg
    made = await arm.wait(lambda c: c.images.begin_create_or_update(
        cfg.resource_group, name, image_body(cfg, disk_id)), f"creating the image {name}")
    return str(made["id"])


async def delete(arm: Arm, name: str) -> bool:
    """Delete the image once it is no longer being created; False when it did not exist."""
    rg = arm.cfg.resource_group
    if not await settled(arm, lambda c: c.images.get(rg, name), f"the image {name}"):
        return False
    try:
        await arm.wait(lambda c: c.images.begin_delete(rg, name), f"deleting the image {name}")
    except AzureNotFoundError:
        return False
    return True
