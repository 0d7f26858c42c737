"""Connector settings of ``type: azure`` and ``type: azure-mcs``, validated at load."""

from __future__ import annotations

import os
import re
import string
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.base import FORMAT_MAX_GIB, ConnectorConfig

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: a tenant is its directory id (a UUID) or one of its domain names (contoso.onmicrosoft.com)
_TENANT = r"^([0-9a-fA-F-]{36}|[A-Za-z0-9][A-Za-z0-9.-]{0,252})$"
#: Azure's rule for resource group names: letters, digits, _ ( ) - . ; not ending with "."
_RESOURCE_GROUP = r"^[-\w.()]{0,89}[-\w()]$"
_LOCATION = r"^[a-z][a-z0-9]{1,39}$"
_GALLERY = r"^[A-Za-z0-9][A-Za-z0-9._]{0,78}[A-Za-z0-9]$"
_DEFINITION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,78}[A-Za-z0-9]$"
#: Azure: at most 50 tags; a name at most 512 characters without < > % & \ ? /, a value 256
_TAG_NAME_FORBIDDEN = set('<>%&\\?/')
INT32_MAX = 2**31 - 1

def _any_case(*words: str) -> Any:
    """The JSON Schema input of a setting read in any case: the words (for completion) or any
    casing of them (JSON Schema patterns have no case-insensitive flag)."""
    letters = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in w)
               for w in words)
    return Literal[words] | Annotated[str, Field(pattern=f"^(?:{'|'.join(letters)})$")]


def _capitalized(value: object) -> object:
    return value.capitalize() if isinstance(value, str) else value


DiskSku = Literal["Standard_LRS", "StandardSSD_LRS", "Premium_LRS", "StandardSSD_ZRS", "Premium_ZRS"]


def _https(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{key} must be an https:// URL, got {value!r}")
    return value.rstrip("/")


class AzureConfig(ConnectorConfig):
    """What both Azure connector types share."""

    #: the fixed VHD's limit (adapters.base.FORMAT_MAX_GIB), below Azure's own: a managed OS
    #: disk may be 4095 GiB and an upload disk 32 TiB + 512 bytes (uploadSizeBytes' range)
    max_disk_gib: ClassVar[int | None] = FORMAT_MAX_GIB["vhd"]

    #: template filesystems an Azure VM boots from (ext4 for Linux, ntfs for Windows)
    subscription_id: str = Field(pattern=_UUID)
    tenant_id: str = Field(pattern=_TENANT)
    resource_group: str = Field(pattern=_RESOURCE_GROUP)
    location: str = Field(pattern=_LOCATION)
    #: ``client_secret``: a service principal (client_id + client_secret_env);
    #: ``managed_identity``: the VM's or a user-assigned one (client_id selects it);
    #: ``default``: azure-identity's DefaultAzureCredential (environment, workload identity,
    #: managed identity, Azure CLI, ...)
    credential: Literal["client_secret", "managed_identity", "default"] = "default"
    client_id: str | None = Field(None, pattern=_UUID)
    client_secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    hyper_v_generation: Literal["V1", "V2"] = "V2"
    os_type: Literal["Windows", "Linux"] = "Windows"
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    disk_sku: DiskSku = "Standard_LRS"
    #: the size the next step suggests for the VM made from the image
    vm_size: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{1,63}$")
    tags: dict[str, str] = Field(default_factory=dict)
    #: Azure Resource Manager, the token authority and the portal (sovereign clouds differ)
    arm_endpoint: str = "https://management.azure.com"
    authority: str = "https://login.microsoftonline.com"
    portal: str = "https://portal.azure.com"
    #: keep the managed disk the image was made from (normally removed once the image exists)
    keep_disk: bool = False
    #: seconds to wait for a VM made from the image to run and shut down (default: the runner's)
    watch_timeout: float | None = Field(None, gt=0)

    # the issue and Azure's docs write both "generalized" and "Generalized"
    @field_validator("os_type", mode="before", json_schema_input_type=_any_case("Windows", "Linux"))
    @classmethod
    def _os_type(cls, value: object) -> object:
        return _capitalized(value)

    @field_validator("os_state", mode="before",
                     json_schema_input_type=_any_case("Generalized", "Specialized"))
    @classmethod
    def _os_state(cls, value: object) -> object:
        return _capitalized(value)

    @field_validator("arm_endpoint", "authority", "portal")
    @classmethod
    def _endpoint(cls, value: str, info: object) -> str:
        return _https(value, getattr(info, "field_name", "endpoint"))

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError(f"Azure allows at most 50 tags, got {len(value)}")
        for name, text in value.items():
            bad = sorted(_TAG_NAME_FORBIDDEN & set(name))
            if not name or len(name) > 512 or bad:
                raise ValueError(f"tag name {name!r}: 1 to 512 characters, none of < > % & \\ ? /")
            if len(text) > 256:
                raise ValueError(f"tag {name!r}: the value is {len(text)} characters (at most 256)")
        return value

    @model_validator(mode="after")
    def _credential(self) -> AzureConfig:
        if self.credential == "client_secret":
            missing = [k for k in ("client_id", "client_secret_env") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"credential: client_secret needs {' and '.join(missing)}")
            assert self.client_secret_env is not None
            if not os.environ.get(self.client_secret_env):
                raise ValueError(f"environment variable {self.client_secret_env} "
                                 "(client_secret_env) is not set")
        elif self.client_secret_env is not None:
            raise ValueError(f"client_secret_env is used only with credential: client_secret "
                             f"(credential is {self.credential})")
        if self.credential == "default" and self.client_id is not None:
            raise ValueError("client_id is not used with credential: default (set "
                             "AZURE_CLIENT_ID for the default chain, or credential: managed_identity)")
        return self


class Config(AzureConfig):
    """``type: azure``: a managed image, and a watch for the VM made from it."""

    type: Literal["azure"]


class ImageIdentifier(BaseModel):
    """The publisher/offer/sku of an image definition layerbot creates."""

    model_config = ConfigDict(extra="forbid")
    publisher: str = Field("layerbot", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    offer: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    sku: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


#: placeholders of ``version`` and how each is written from the UTC time of the publish
_FIELDS = {"yyyy": "%Y", "yy": "%y", "mm": "%m", "dd": "%d", "hh": "%H", "hhmm": "%H%M",
           "MM": "%M", "ss": "%S", "ddd": "%j"}


def render_version(pattern: str, when: datetime) -> str:
    """The gallery image version ``pattern`` names at ``when`` (UTC)."""
    values = {name: when.strftime(fmt) for name, fmt in _FIELDS.items()}
    # int() drops leading zeros: Azure reads "2026.0105.0930" as 2026.105.930 anyway
    return ".".join(str(int(part)) for part in pattern.format(**values).split("."))


def check_version_pattern(pattern: str) -> str:
    """A pattern whose every rendering is major.minor.patch of 32-bit integers, or ValueError."""
    names = []
    for literal, name, spec, conv in string.Formatter().parse(pattern):
        if not re.fullmatch(r"[0-9.]*", literal):
            raise ValueError(f"{pattern!r}: only digits, dots and placeholders are allowed, "
                             f"not {literal!r}")
        if name is None:
            continue
        if name not in _FIELDS or spec or conv:
            raise ValueError(f"{pattern!r}: unknown placeholder {{{name}}} (known: "
                             f"{', '.join('{' + k + '}' for k in _FIELDS)})")
        names.append(name)
    latest = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    rendered = pattern.format(**{n: latest.strftime(_FIELDS[n]) for n in _FIELDS})
    parts = rendered.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{pattern!r}: a gallery image version is major.minor.patch (three "
                         f"numbers), this gives {rendered!r}")
    for label, part in zip(("major", "minor", "patch"), parts, strict=True):
        if int(part) > INT32_MAX:
            raise ValueError(f"{pattern!r}: the {label} number can reach {part}, more than "
                             f"Azure's 32-bit limit {INT32_MAX}")
    if not names:
        raise ValueError(f"{pattern!r}: without a placeholder every publish has the same version")
    return pattern


class McsConfig(AzureConfig):
    """``type: azure-mcs``: an Azure Compute Gallery image version for MCS machine catalogs."""

    type: Literal["azure-mcs"]
    gallery: str = Field(pattern=_GALLERY)
    image_definition: str = Field(pattern=_DEFINITION)
    #: the version's name from the UTC time of the publish; placeholders: {yyyy} {yy} {mm}
    #: {dd} {ddd} (day of the year) {hh} {hhmm} {MM} (minutes) {ss}
    version: str = "{yyyy}.{mm}{dd}.{hhmm}{ss}"
    #: regions the version is replicated to (the connector's location is always one)
    replication_regions: list[str] = Field(default_factory=list)
    replica_count: int = Field(1, ge=1, le=100)
    #: used when layerbot creates the image definition (offer and sku default to its name)
    identifier: ImageIdentifier = Field(default_factory=ImageIdentifier)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version_pattern(value)

    @field_validator("replication_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        for i, region in enumerate(value):
            if not re.fullmatch(_LOCATION, region):
                raise ValueError(f"[{i}]: {region!r} is not an Azure region name (e.g. westeurope)")
        return value

    def regions(self) -> list[str]:
        return [self.location, *[r for r in dict.fromkeys(self.replication_regions)
                                 if r != self.location]]
