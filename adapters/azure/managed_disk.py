"""The managed disk a fixed VHD is uploaded into: created empty with ``createOption: Upload``,
opened for writing with a SAS (``beginGetAccess``), closed (``endGetAccess``), deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.azure.arm import Arm
from adapters.azure.arm_errors import AzureNotFoundError
from adapters.azure.azure_config import AzureConfig
from adapters.base import PlatformError

MIB = 1 << 20
VHD_FOOTER = 512
#: Azure's smallest upload disk: 20 MiB of data
MIN_VIRTUAL = 20 * MIB
#: hours a write SAS stays valid (an upload of a large disk over a slow link)
SAS_SECONDS = 24 * 3600
#: Azure resource names are at most 80 characters
MAX_NAME = 80


def upload_size(vhd: Path) -> int:
    """``uploadSizeBytes`` of a fixed VHD: its file size, which Azure wants to be a whole
    number of MiB plus the 512-byte footer; PlatformError naming the file otherwise."""
    size = vhd.stat().st_size
    virtual = size - VHD_FOOTER
    if virtual < MIN_VIRTUAL or virtual % MIB:
        raise PlatformError(
            f"Azure: {vhd.name} is {size} bytes: a managed disk is uploaded from a fixed VHD of "
            f"a whole number of MiB (at least 20) plus the {VHD_FOOTER}-byte footer, e.g. "
            f"{max(MIN_VIRTUAL, -(-virtual // MIB) * MIB) + VHD_FOOTER} bytes")
    return size


def azure_name(base: str, suffix: str = "") -> str:
    """``base + suffix`` cut to Azure's 80 characters, keeping the suffix (and base's end,
    which holds the task's unique stamp)."""
    room = MAX_NAME - len(suffix)
    return (base if len(base) <= room else base[len(base) - room:].lstrip("-._")) + suffix


def resource_id(cfg: AzureConfig, kind: str, *names: str) -> str:
    """``/subscriptions/.../providers/Microsoft.Compute/{kind}/{name}[/...]``; ``kind`` may
    name nested types: ``galleries/images/versions``."""
    parts = [f"{k}/{n}" for k, n in zip(kind.split("/"), names, strict=True)]
    return (f"/subscriptions/{cfg.subscription_id}/resourceGroups/{cfg.resource_group}"
            f"/providers/Microsoft.Compute/{'/'.join(parts)}")


def disk_body(cfg: AzureConfig, size: int) -> dict[str, Any]:
    """Disk_Create_UploadDisk.json's shape."""
    properties: dict[str, Any] = {
        "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
        "osType": cfg.os_type, "hyperVGeneration": cfg.hyper_v_generation}
    return {"location": cfg.location, "sku": {"name": cfg.disk_sku}, "tags": cfg.tags,
            "properties": properties}


async def create(arm: Arm, name: str, size: int) -> None:
    cfg = arm.cfg
    await arm.wait(lambda c: c.disks.begin_create_or_update(cfg.resource_group, name,
                                                            disk_body(cfg, size)),
                   f"creating the upload disk {name}")


async def grant_write(arm: Arm, name: str) -> str:
    """A SAS URL to write the disk's page blob (never logged nor shown)."""
    rg = arm.cfg.resource_group
    access = await arm.wait(
        lambda c: c.disks.begin_grant_access(rg, name, {"access": "Write",
                                                        "durationInSeconds": SAS_SECONDS}),
        f"opening the upload disk {name} for writing")
    sas = access.get("accessSAS") if access is not None else None
    if not sas:
        raise PlatformError(f"Azure: opening the upload disk {name} for writing gave no SAS URL")
    return str(sas)


async def revoke(arm: Arm, name: str) -> None:
    rg = arm.cfg.resource_group
    await arm.wait(lambda c: c.disks.begin_revoke_access(rg, name),
                   f"closing the upload disk {name}")


async def delete(arm: Arm, name: str) -> bool:
    """Revoke any SAS access, then delete; False when the disk did not exist."""
    rg = arm.cfg.resource_group
    try:
        await revoke(arm, name)
    except AzureNotFoundError:
        return False
    await arm.wait(lambda c: c.disks.begin_delete(rg, name), f"deleting the upload disk {name}")
    return True
