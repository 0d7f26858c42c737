"""``type: hyperv`` connector settings, validated at load (no pypsrp or smbprotocol import)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from adapters.windows_remote.winrm_settings import WindowsRemoteSettings

#: Hyper-V's Secure Boot templates (Set-VMFirmware -SecureBootTemplate), or off
SecureBoot = Literal["MicrosoftWindows", "MicrosoftUEFICertificateAuthority", "OpenSourceShieldedVM", "off"]


class Config(WindowsRemoteSettings):
    """See the example connector in adapters/hyperv/__init__.py and docs/hyperv.md."""

    type: Literal["hyperv"]
    #: the virtual switch of the VM's network adapter
    switch: str = Field(min_length=1)
    #: 1: BIOS, IDE disk, VHD; 2: UEFI, SCSI disk, VHDX
    generation: Literal[1, 2] = 2
    #: a multiple of 2 (Hyper-V assigns memory in 2 MB units)
    memory_mb: int = Field(4096, ge=32, le=12 * 2**20)
    cpus: int = Field(2, ge=1, le=240)
    #: generation 2: a Secure Boot template or "off"; unset: Hyper-V's default (on, MicrosoftWindows)
    secure_boot: SecureBoot | None = None
    #: a link for the task message, e.g. a Windows Admin Center page; {name} and {host} are filled in
    console_url: str | None = None
    #: seconds to wait for the guest to power on and off (default: the runner's, 24 h)
    watch_timeout: float | None = Field(None, gt=0)

    @field_validator("memory_mb")
    @classmethod
    def _memory_in_2_mb_units(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"{value} is odd: Hyper-V assigns memory in multiples of 2 MB")
        return value

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            value.format(name="x", host="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{value!r}: only {{name}} and {{host}} may be filled in ({exc!r})") from None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _generation_settings(self) -> Config:
        if self.generation == 1 and self.secure_boot is not None:
            raise ValueError(f"secure_boot {self.secure_boot!r}: generation 1 VMs have no Secure Boot "
                             "(use generation: 2)")
        return self
