"""The managed disk a fixed VHD is uploaded into: created empty with ``createOption: Upload``,
opened for writing with a SAS (``beginGetAccess``), closed (``endGetAccess``), deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.azure.arm import Arm
from adapters.azure.arm_errors import AzureNotFoundError
from adapters.azure.azure_config import AzureConfig
from adapters.azure.settle import settled
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
    return await _grant(arm, name, "Write", "writing")


async def grant_read(arm: Arm, name: str) -> str:
    """A SAS URL to read the page blob of a closed (``Unattached``) disk."""
    return await _grant(arm, name, "Read", "reading")


async def _grant(arm: Arm, name: str, access: str, doing: str) -> str:
    rg = arm.cfg.resource_group
    granted = await arm.wait(
        lambda c: c.disks.begin_grant_access(rg, name, {"access": access,
                                                        "durationInSeconds": SAS_SECONDS}),
        f"opening the upload disk {name} for {doing}")
    sas = granted.get("accessSAS") if granted is not None else None
    if not sas:
        raise PlatformError(f"Azure: opening the upload disk {name} for {doing} gave no SAS URL")
    return str(sas)


#: disk states in which its page blob is open through a SAS (revoke closes it)
OPEN_STATES = frozenset({"ActiveUpload", "ActiveSAS", "ActiveSASFrozen"})
#: states in which an upload disk takes (more) pages through a write SAS
UPLOADABLE_STATES = frozenset({"ReadyToUpload", "ActiveUpload"})


async def state(arm: Arm, name: str) -> str | None:
    """The disk's ``diskState`` (ReadyToUpload, ActiveUpload, Unattached...), None when the
    disk does not exist."""
    rg = arm.cfg.resource_group
    try:
        found = await arm.call(lambda c: c.disks.get(rg, name), f"reading the upload disk {name}")
    except AzureNotFoundError:
        return None
    return str((found.get("properties") or {}).get("diskState") or "")


async def revoke(arm: Arm, name: str) -> None:
    rg = arm.cfg.resource_group
    await arm.wait(lambda c: c.disks.begin_revoke_access(rg, name),
                   f"closing the upload disk {name}")


async def delete(arm: Arm, name: str) -> bool:
    """Once the disk is no longer being created, revoke any SAS access, then delete; False
    when the disk did not exist."""
    rg = arm.cfg.resource_group
    if not await settled(arm, lambda c: c.disks.get(rg, name), f"the upload disk {name}"):
        return False
    try:
        await revoke(arm, name)
    except AzureNotFoundError:
        return False
    await arm.wait(lambda c: c.disks.begin_delete(rg, name), f"deleting the upload disk {name}")
    return True
