"""``type: pvs`` connector settings, validated at load (no pypsrp/smbprotocol import)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import ConnectorConfig, ConnectorReference
from adapters.windows_remote.winrm_settings import WinRMLogin

#: Citrix Provisioning's write cache types (``Set-PvsDisk -WriteCacheType``): name -> number
WRITE_CACHE_TYPES: dict[str, int] = {
    "private": 0,
    "cacheOnServer": 1,
    "cacheInDeviceRam": 3,
    "cacheOnDeviceHardDisk": 4,
    "cacheInDeviceRamDisk": 6,
    "cacheOnServerPersistent": 7,
    "cacheInDeviceRamWithOverflowOnHardDisk": 9,
}
WriteCache = Literal["private", "cacheOnServer", "cacheInDeviceRam", "cacheOnDeviceHardDisk",
                     "cacheInDeviceRamDisk", "cacheOnServerPersistent",
                     "cacheInDeviceRamWithOverflowOnHardDisk"]
#: ``Set-PvsDisk -LicenseMode``: none, Multiple Activation Key, Key Management Service
LICENSE_MODES: dict[str, int] = {"none": 0, "mak": 1, "kms": 2}
#: connector types whose adapter creates the target VM next to the vDisk
HYPERVISOR_TYPES = frozenset({"nutanix", "xenserver", "hyperv", "vsphere"})

# \\server\share[\folder...]: no empty part, none of the characters Windows forbids in names
_UNC = re.compile(r"\\\\[^\\/:*?\"<>|]+(\\[^\\/:*?\"<>|]+)+")


class Config(WinRMLogin):
    """See the example connector in adapters/pvs/__init__.py and docs/pvs.md. The login and
    transport settings (user_env, password_env, auth, https, ca_file, smb_port...) and their
    checks are :class:`~adapters.windows_remote.winrm_settings.WinRMLogin`'s."""

    type: Literal["pvs"]
    #: the Provisioning server that runs the Citrix.PVS.SnapIn cmdlets (PowerShell remoting)
    server: str = Field(min_length=1, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    #: the vDisk's store and site at the farm
    store: str = Field(min_length=1)
    site: str = Field(min_length=1)
    #: the store's folder as a UNC path (\\\\server\\share[\\folder]); the vhdx is copied there
    store_share: str
    #: vDisk properties
    access_mode: Literal["standard", "private"] = "standard"
    #: default: cacheInDeviceRamWithOverflowOnHardDisk for a standard image, private for private
    write_cache: WriteCache | None = None
    #: RAM for the device RAM caches, MB (PVS's default when not set)
    write_cache_size_mb: int | None = Field(None, ge=0, le=131072)
    license_mode: Literal["none", "mak", "kms"] = "none"
    #: another connector (nutanix, xenserver, hyperv, vsphere) that also creates a target VM
    hypervisor: str | None = None

    @field_validator("store_share")
    @classmethod
    def _unc(cls, value: str) -> str:
        if _UNC.fullmatch(value.rstrip("\\")) is None:
            raise ValueError(f"{value!r} is not a UNC path like \\\\pvs01\\Store (a server, a share, "
                             "optionally folders; backslashes)")
        return value.rstrip("\\")

    @model_validator(mode="after")
    def _cache_matches_access(self) -> Config:
        private = self.access_mode == "private"
        if self.write_cache is None:
            self.write_cache = "private" if private else "cacheInDeviceRamWithOverflowOnHardDisk"
        elif private != (self.write_cache == "private"):
            raise ValueError(
                f"write_cache {self.write_cache!r} does not go with access_mode {self.access_mode!r}: "
                "a private image has write_cache 'private', a standard image any other")
        return self

    @property
    def share_server(self) -> str:
        return self.store_share[2:].split("\\", 1)[0]

    @property
    def write_cache_type(self) -> int:
        assert self.write_cache is not None  # set by the validator
        return WRITE_CACHE_TYPES[self.write_cache]

    def references(self) -> list[ConnectorReference]:
        if self.hypervisor is None:
            return []
        return [ConnectorReference("hypervisor", self.hypervisor, HYPERVISOR_TYPES)]

    def link_problems(self, key: str, name: str, config: ConnectorConfig) -> list[str]:
        share = getattr(config, "share", None) if config.type == "hyperv" else None
        if isinstance(share, str) and share.casefold() == self.store_share.casefold():
            # both copy <image name>.vhdx there: one would overwrite and remove the other's file
            return [f"connector {name!r} (type hyperv) copies its disks to share '{share}', which is "
                    f"this connector's store_share '{self.store_share}': give connectors.{name}.share "
                    "another folder"]
        return []
