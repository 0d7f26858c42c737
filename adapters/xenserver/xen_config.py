"""``type: xenserver`` connector settings, validated at load (no XenAPI import)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from adapters.base import FORMAT_MAX_GIB, CatalogPath, ConnectorConfig, path_kind


class Config(ConnectorConfig):
    """See the example connector in adapters/xenserver/__init__.py and docs/xenserver.md."""

    #: its dynamic VHD (adapters.base.FORMAT_MAX_GIB)
    max_disk_gib: ClassVar[int | None] = FORMAT_MAX_GIB["vhd-dynamic"]
    type: Literal["xenserver"]
    #: the pool coordinator: a host name (HTTPS) or an http(s)://host[:port] URL
    host: str = Field(min_length=1)
    user_env: str
    password_env: str
    insecure: bool = False
    ca_file: CatalogPath | None = None
    #: storage repository (name_label or UUID) the disk goes to
    sr: str = Field(min_length=1)
    #: network (name_label or UUID) of the VM's interface
    network: str = Field(min_length=1)
    #: template or VM (name_label or UUID) cloned for the new VM
    vm_template: str = Field(min_length=1)
    #: a link to the VM for the task message, e.g. https://xo.example/#/vms/{uuid}/general
    console_url: str | None = None
    #: seconds to wait for the guest to power on and off (default: the runner's, 24 h)
    watch_timeout: float | None = Field(None, gt=0)

    @property
    def url(self) -> str:
        """The XenAPI endpoint's base URL (no trailing slash)."""
        return self.host.rstrip("/") if "://" in self.host else f"https://{self.host}"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        parts = urlsplit(value if "://" in value else f"https://{value}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not a host name or an http(s)://host[:port] URL")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/"):
            raise ValueError(f"{value!r}: give scheme, host and port only (no user, path or query)")
        try:
            parts.port  # noqa: B018  # raises for a port out of range
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "{uuid}" not in value:
            raise ValueError(f"{value!r} has no {{uuid}} placeholder (the VM's UUID goes there)")
        try:
            value.format(uuid="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{value!r}: only {{uuid}} may be filled in ({exc!r})") from None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _check(self) -> Config:
        problems: list[str] = []
        if self.insecure and self.ca_file is not None:
            problems.append("set either insecure or ca_file, not both")
        if self.ca_file is not None:
            problems += _ca_file_problems(Path(self.ca_file))
        for field in ("user_env", "password_env"):
            var = getattr(self, field)
            if not os.environ.get(var):
                problems.append(f"environment variable {var} ({field}) is not set")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _ca_file_problems(ca_file: Path) -> list[str]:
    from adapters.vsphere.session import CAFileError, ssl_context

    try:
        if path_kind(ca_file) != "file":
            return [f"ca_file {str(ca_file)!r} does not exist"]
        ssl_context(False, ca_file)
    except (ValueError, CAFileError) as exc:
        return [f"ca_file: {exc}"]
    return []
