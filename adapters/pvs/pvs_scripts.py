"""The PowerShell the Provisioning server runs. Every value (names from the catalog and the
task) is a parameter of the script block, never part of its text, so a quote, a backtick or a
``$(...)`` in a name reaches the cmdlets as plain text. Each script answers one JSON object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Loads the Citrix.PVS.SnapIn cmdlets once per runspace (PVS 7.x installs the module with
#: the console; older farms registered it as a snap-in).
_SNAPIN = """\
$ErrorActionPreference = 'Stop'
if (-not (Get-Command Import-PvsDisk -ErrorAction SilentlyContinue)) {
    $dll = Join-Path $env:ProgramFiles 'Citrix\\Provisioning Services Console\\Citrix.PVS.SnapIn.dll'
    if (Test-Path -LiteralPath $dll) { Import-Module $dll } else { Add-PSSnapin Citrix.PVS.SnapIn }
}
"""

IMPORT_DISK = """\
param([string]$Name, [string]$Store, [string]$Site, [string]$Description)
""" + _SNAPIN + """\
$at = @{ DiskLocatorName = $Name; StoreName = $Store; SiteName = $Site }
if ($null -eq (Get-PvsDiskLocator @at -ErrorAction SilentlyContinue)) {
    Import-PvsDisk @at -VHDX -Description $Description | Out-Null
}
$d = Get-PvsDiskLocator @at
[pscustomobject]@{ DiskLocatorId = [string]$d.DiskLocatorId; DiskLocatorName = $d.DiskLocatorName;
                   StoreName = $d.StoreName; SiteName = $d.SiteName } | ConvertTo-Json -Depth 3 -Compress
"""

SET_DISK = """\
param([string]$Name, [string]$Store, [string]$Site, [int]$WriteCacheType, [int]$LicenseMode,
      [int]$WriteCacheSize = -1)
""" + _SNAPIN + """\
$props = @{ DiskLocatorName = $Name; StoreName = $Store; SiteName = $Site;
            WriteCacheType = $WriteCacheType; LicenseMode = $LicenseMode }
if ($WriteCacheSize -ge 0) { $props.WriteCacheSize = $WriteCacheSize }
Set-PvsDisk @props
$d = Get-PvsDisk -DiskLocatorName $Name -StoreName $Store -SiteName $Site
[pscustomobject]@{ WriteCacheType = [int]$d.WriteCacheType; LicenseMode = [int]$d.LicenseMode;
                   WriteCacheSize = [int]$d.WriteCacheSize } | ConvertTo-Json -Depth 3 -Compress
"""

REMOVE_LOCATOR = """\
param([string]$Name, [string]$Store, [string]$Site)
""" + _SNAPIN + """\
$at = @{ DiskLocatorName = $Name; StoreName = $Store; SiteName = $Site }
$found = Get-PvsDiskLocator @at -ErrorAction SilentlyContinue
if ($null -ne $found) { Remove-PvsDiskLocator @at }
[pscustomobject]@{ Removed = ($null -ne $found) } | ConvertTo-Json -Depth 3 -Compress
"""


@dataclass(frozen=True)
class Script:
    """One script block and the values of its parameters."""

    #: what it does, for messages ("importing vDisk x")
    purpose: str
    text: str
    parameters: dict[str, Any] = field(default_factory=dict)


def import_disk(name: str, store: str, site: str, description: str) -> Script:
    return Script(f"importing vDisk {name}", IMPORT_DISK,
                  {"Name": name, "Store": store, "Site": site, "Description": description})


def set_disk(name: str, store: str, site: str, write_cache_type: int, license_mode: int,
             write_cache_size_mb: int | None) -> Script:
    parameters: dict[str, Any] = {"Name": name, "Store": store, "Site": site,
                                  "WriteCacheType": write_cache_type, "LicenseMode": license_mode}
    if write_cache_size_mb is not None:
        parameters["WriteCacheSize"] = write_cache_size_mb
    return Script(f"setting the properties of vDisk {name}", SET_DISK, parameters)


def remove_locator(name: str, store: str, site: str) -> Script:
    return Script(f"removing vDisk {name}", REMOVE_LOCATOR,
                  {"Name": name, "Store": store, "Site": site})
