"""The vDisk's name at the farm and where its file goes."""

from __future__ import annotations

#: Import-PvsDisk's DiskLocatorName takes 1-52 characters
MAX_VDISK_NAME = 52
#: what messages.image_name appends to the template: -YYYYmmdd-HHMMSS-xxxxxx
_STAMP = 23


def vdisk_name(image_name: str) -> str:
    """The task's image name, its template part shortened when the whole is too long for PVS
    (the time stamp and random part keep it unique)."""
    if len(image_name) <= MAX_VDISK_NAME:
        return image_name
    keep = MAX_VDISK_NAME - _STAMP
    return image_name[:keep].rstrip("-._") + image_name[-_STAMP:]


def file_unc(store_share: str, name: str) -> str:
    return f"{store_share}\\{name}.vhdx"


def properties_unc(vhdx_unc: str) -> str:
    """The .pvp file Import-PvsDisk writes next to the vhdx (its vDisk properties)."""
    return vhdx_unc.removesuffix(".vhdx") + ".pvp"
