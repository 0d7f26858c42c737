"""Connection settings of a connector driven by PowerShell remoting plus an SMB share.

A platform's ``Config`` subclasses :class:`WindowsRemoteSettings` (a host and a share with
its local path, Hyper-V) or :class:`WinRMLogin` (the login and transport settings only, a
Provisioning server names its own host and share keys); the checks run at load and name the
key and the value that is wrong (never a secret: only variable names are set).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import CatalogPath, ConnectorConfig, path_kind

#: \\server\share[\folder...]: no empty parts, none of Windows' reserved characters
_PART = r'[^\\/:*?"<>|]+'
_UNC = re.compile(rf"^\\\\(?P<server>{_PART})\\(?P<share>{_PART})(\\{_PART})*\\?$")
#: D:\folder[\...] or C:\ClusterStorage\Volume1\... (a local path on the Windows host)
_LOCAL = re.compile(r'^[A-Za-z]:\\([^\\/:*?"<>|]+\\?)*$')
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: auth -> the Python module it needs beyond NTLM (pypsrp's and smbprotocol's extras)
AUTH_MODULES = {"kerberos": "gssapi", "credssp": "requests_credssp"}
AUTH_INSTALL = ("pip install 'layerbot[hyperv]' (Kerberos builds gssapi: apt-get install "
                "libkrb5-dev first)")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class WinRMLogin(ConnectorConfig):
    """How PowerShell remoting (WinRM) and SMB log in to a Windows host."""

    #: names of the environment variables holding the user (DOMAIN\\user) and password
    user_env: str
    password_env: str
    auth: Literal["ntlm", "kerberos", "credssp"] = "ntlm"
    #: WinRM over HTTPS (5986); false: HTTP (5985), messages still encrypted by NTLM/Kerberos
    https: bool = True
    #: WinRM port (default: 5986 with https, else 5985)
    winrm_port: int | None = Field(None, ge=1, le=65535)
    #: skip the WinRM certificate check (labs only)
    insecure: bool = False
    #: CA bundle (PEM) that signed the WinRM certificate; default: the system's
    ca_file: CatalogPath | None = None
    #: the SMB port of the share's server
    smb_port: int = Field(445, ge=1, le=65535)
    #: SMB 3 encryption of the copy (the disk may hold licences and keys)
    smb_encrypt: bool = True

    @field_validator("user_env", "password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if _ENV_NAME.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an environment variable name (the connector names "
                             "the variable that holds the secret, never the secret itself)")
        return value

    @model_validator(mode="after")
    def _login_checks(self) -> WinRMLogin:
        problems: list[str] = []
        if self.insecure and not self.https:
            problems.append("insecure: true only applies with https: true")
        if self.insecure and self.ca_file is not None:
            problems.append("set either insecure or ca_file, not both")
        if self.ca_file is not None and path_kind(Path(self.ca_file)) != "file":
            problems.append(f"ca_file {str(self.ca_file)!r} does not exist")
        for field in ("user_env", "password_env"):
            var = getattr(self, field)
            if not os.environ.get(var):
                problems.append(f"environment variable {var} ({field}) is not set")
        module = AUTH_MODULES.get(self.auth)
        if module is not None and not _installed(module):
            problems.append(f"auth {self.auth!r} needs the Python module {module}, which is not "
                            f"installed: {AUTH_INSTALL}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class WindowsRemoteSettings(WinRMLogin):
    """Where PowerShell runs and the share the disk is copied to."""

    #: the Windows host's name (as its WinRM certificate names it)
    host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    #: UNC path of the folder the disk is copied to, e.g. \\hv01\layerbot
    share: str
    #: that folder as a path on the host, e.g. D:\Hyper-V\layerbot
    share_local_path: str

    @field_validator("share")
    @classmethod
    def _share(cls, value: str) -> str:
        if not _UNC.match(value):
            raise ValueError(f"{value!r} is not a UNC path \\\\server\\share[\\folder]")
        return value.rstrip("\\")

    @field_validator("share_local_path")
    @classmethod
    def _local(cls, value: str) -> str:
        if not _LOCAL.match(value):
            raise ValueError(f"{value!r} is not an absolute Windows path such as D:\\Hyper-V\\layerbot")
        return value.rstrip("\\")

    @property
    def smb_server(self) -> str:
        return self.share[2:].split("\\", 1)[0]

    def share_file(self, file_name: str) -> str:
        """The UNC path of ``file_name`` in the share."""
        return f"{self.share}\\{file_name}"

    def local_file(self, file_name: str) -> str:
        """The same file as the host sees it."""
        return f"{self.share_local_path}\\{file_name}"


def safe_file_name(name: str, suffix: str) -> str:
    """A Windows- and SMB-safe file name for an image name (anything else becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") + suffix
