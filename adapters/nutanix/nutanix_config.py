"""``type: nutanix`` connector settings, validated at load."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from adapters.base import CatalogFile, ConnectorConfig

BootType = Literal["LEGACY", "UEFI", "SECURE_BOOT"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Config(ConnectorConfig):
    """See the example connector in adapters/nutanix/__init__.py and docs/nutanix.md."""

    type: Literal["nutanix"]
    #: Prism Central, e.g. https://pc.example.com:9440 (scheme, host and port only)
    prism_url: str
    #: names of the environment variables holding the Prism user and password
    user_env: str
    password_env: str
    #: skip the TLS certificate check (a lab's self-signed Prism); exclusive with ca_file
    insecure: bool = False
    #: CA bundle (PEM) that signed Prism's certificate
    ca_file: CatalogFile | None = None
    #: names at Prism: the AHV cluster, its storage container, the VM's subnet
    cluster: str = Field(min_length=1)
    container: str = Field(min_length=1)
    subnet: str = Field(min_length=1)
    #: an existing VM whose vCPUs, memory and boot type the published VM copies
    vm_template: str | None = None
    #: default: the vm_template's, else UEFI
    boot_type: BootType | None = None
    cpus: int = Field(2, ge=1, le=240)
    memory_mib: int = Field(4096, ge=256)
    #: keep the uploaded image once the VM's disk is cloned from it (default: delete it)
    keep_image: bool = False
    #: seconds to wait for the guest to power on and off (default: the runner's, 24 h)
    watch_timeout: float | None = Field(None, gt=0)

    @field_validator("prism_url")
    @classmethod
    def _prism_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r} is not an https URL (e.g. https://pc.example.com:9440)")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/"):
            raise ValueError(f"{value!r}: give scheme, host and port only (no user, path, query "
                             "or fragment)")
        return value.rstrip("/")

    @field_validator("user_env", "password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if _ENV_NAME.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an environment variable name (the connector names "
                             "the variable that holds the secret, never the secret itself)")
        return value

    @model_validator(mode="after")
    def _tls(self) -> Config:
        if self.insecure and self.ca_file is not None:
            raise ValueError(f"insecure: true and ca_file {str(self.ca_file)!r} contradict each "
                             "other: keep one")
        return self
