"""The Windows transport shared by the Hyper-V and Citrix Provisioning adapters.

Not a platform (no ``Config``/``Adapter``, not in the registry): PowerShell remoting over
WinRM with pypsrp (:mod:`adapters.windows_remote.powershell`), a disk copy to an SMB share
with smbprotocol (:mod:`adapters.windows_remote.smb_copy`) and the connection settings a
connector of such a platform shares (:mod:`adapters.windows_remote.winrm_settings`). The SDKs
are imported inside functions only.
"""
