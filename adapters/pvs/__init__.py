"""Citrix Provisioning adapter: the composited disk becomes a vDisk in a Provisioning store.

Publish: the compositor's VHDX is copied over SMB to the store's folder (``store_share``) as
``<vDisk>.vhdx`` (the task's image name, see :mod:`adapters.pvs.pvs_names`) -> the
Provisioning server imports it (``Import-PvsDisk -DiskLocatorName … -StoreName … -SiteName …
-VHDX``) and sets its properties (``Set-PvsDisk -WriteCacheType … -LicenseMode …``) over
PowerShell remoting (:mod:`adapters.pvs.pvs_scripts`: every value a parameter of the script
block). Done once the vDisk is registered: there is no guest to watch.

With ``hypervisor`` (the name of a nutanix, xenserver, hyperv or vsphere connector), the
adapter of that connector also creates the target VM from the same disk (converted to its
format when it wants another) and the task is watched as that adapter watches its VM: its
steps and cleanup run after the vDisk's (see :mod:`adapters.pvs.pvs_hypervisor`).
Cleanup removes the disk locator (``Remove-PvsDiskLocator``), the file (and its .pvp) and,
with a hypervisor, what its adapter made.

Example connector (layerbot.yml)::

    connectors:
      pvs-farm:
        type: pvs
        server: pvs01.corp.example          # runs the Citrix.PVS.SnapIn cmdlets (WinRM, HTTPS)
        auth: ntlm                          # ntlm | kerberos | credssp
        user_env: PVS_USER                  # names of environment variables, not values
        password_env: PVS_PASSWORD
        store: Store1
        site: Site1
        store_share: \\\\pvs01\\Store1        # the store's folder as a UNC path
        access_mode: standard               # standard | private
        write_cache: cacheInDeviceRamWithOverflowOnHardDisk
        write_cache_size_mb: 4096
        license_mode: kms                   # none | mak | kms
        hypervisor: ahv-lab                 # optional: a connector that also creates a target VM
"""

from __future__ import annotations

from adapters.pvs.pvs_adapter import Adapter, Clients
from adapters.pvs.pvs_config import Config
from adapters.pvs.pvs_resources import PvsDiskLocator, PvsFile, PvsPublished

__all__ = ["Adapter", "Clients", "Config", "PvsDiskLocator", "PvsFile", "PvsPublished"]
