"""The PowerShell the Provisioning server runs, as :class:`~adapters.windows_remote.powershell.Script`
bodies: every value (names from the catalog and the task) is a parameter of the script block,
never part of its text, so a quote, a backtick or a ``$(...)`` in a name reaches the cmdlets as
plain text. Each body outputs one object (the remoting module returns them as JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.windows_remote.powershell import Script

#: Loads the Citrix.PVS.SnapIn cmdlets (PVS 7.x installs the module with the console; older
#: farms registered it as a snap-in).
_SNAPIN = """\
if (-not (Get-Command Import-PvsDisk -ErrorAction SilentlyContinue)) {
    $dll = Join-Path $env:ProgramFiles 'Citrix\\Provisioning Services Console\\Citrix.PVS.SnapIn.dll'
    if (Test-Path -LiteralPath $dll) { Import-Module $dll } else { Add-PSSnapin Citrix.PVS.SnapIn }
}
$at = @{ DiskLocatorName = $Name; StoreName = $Store; SiteName = $Site }
# the locator or $null: a missing locator is a terminating error of the PVS cmdlets, which
# -ErrorAction SilentlyContinue does not silence
function Find-Locator {
    try { Get-PvsDiskLocator @at } catch { $null }
}
"""

IMPORT_DISK = _SNAPIN + """\
if ($null -eq (Find-Locator)) {
    Import-PvsDisk @at -VHDX -Description $Description | Out-Null
}
$d = Get-PvsDiskLocator @at
[pscustomobject]@{ DiskLocatorId = [string]$d.DiskLocatorId; DiskLocatorName = $d.DiskLocatorName;
                   StoreName = $d.StoreName; SiteName = $d.SiteName }"""

SET_DISK = _SNAPIN + """\
$props = @{ WriteCacheType = $WriteCacheType; LicenseMode = $LicenseMode }
if ($null -ne $WriteCacheSize) { $props.WriteCacheSize = $WriteCacheSize }
Set-PvsDisk @at @props | Out-Null
$d = Get-PvsDisk @at
[pscustomobject]@{ WriteCacheType = [int]$d.WriteCacheType; LicenseMode = [int]$d.LicenseMode;
                   WriteCacheSize = [int]$d.WriteCacheSize }"""

REMOVE_LOCATOR = _SNAPIN + """\
$found = Find-Locator
if ($null -ne $found) { Remove-PvsDiskLocator @at | Out-Null }
[pscustomobject]@{ Removed = ($null -ne $found) }"""


def import_disk(name: str, store: str, site: str, description: str) -> Script:
    from adapters.windows_remote.powershell import script

    return script(f"importing vDisk {name}", IMPORT_DISK, Name=name, Store=store, Site=site,
                  Description=description)


def set_disk(name: str, store: str, site: str, write_cache_type: int, license_mode: int,
             write_cache_size_mb: int | None) -> Script:
    from adapters.windows_remote.powershell import script

    return script(f"setting the properties of vDisk {name}", SET_DISK, Name=name, Store=store,
                  Site=site, WriteCacheType=write_cache_type, LicenseMode=license_mode,
                  WriteCacheSize=write_cache_size_mb)


def remove_locator(name: str, store: str, site: str) -> Script:
    from adapters.windows_remote.powershell import script

    return script(f"removing vDisk {name}", REMOVE_LOCATOR, Name=name, Store=store, Site=site)
