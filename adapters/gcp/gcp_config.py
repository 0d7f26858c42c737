"""``type: gcp`` connector settings, validated at load (no SDK import: the catalog of a
``layerbot templates`` must not pay google-cloud-compute's import time)."""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from adapters.base import ConnectorConfig
from adapters.gcp import names

#: Compute Engine's GuestOsFeature.Type values (google-cloud-compute 1.57) but the
#: placeholders UNDEFINED_TYPE and FEATURE_TYPE_UNSPECIFIED
GuestOsFeature = Literal[
    "BARE_METAL_LINUX_COMPATIBLE", "BMSAI_CAPABLE", "CCA_CAPABLE", "GVNIC", "IDPF",
    "MULTI_IP_SUBNET", "SECURE_BOOT", "SEV_CAPABLE", "SEV_LIVE_MIGRATABLE",
    "SEV_LIVE_MIGRATABLE_V2", "SEV_SNP_CAPABLE", "SNP_SVSM_CAPABLE", "SUSPEND_SAFE_FPR",
    "TDX_CAPABLE", "UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "WINDOWS",
]
#: the labels every image gets; a connector cannot set them
RESERVED_LABELS = ("layerbot-template", "layerbot-task")


def _endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL (e.g. https://compute.example.com)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{parts.scheme}://{parts.hostname}...: an endpoint is scheme, host, "
                         "port and path only (no user, query or fragment)")
    return value.rstrip("/")


class Config(ConnectorConfig):
    """See the example connector in adapters/gcp/__init__.py and docs/gcp.md."""

    type: Literal["gcp"]
    project: str
    zone: str
    bucket: str
    #: names the environment variable holding the path of a service-account key file;
    #: unset: application default credentials
    credentials_file_env: str | None = None
    image_family: str | None = None
    storage_locations: list[str] = Field(default_factory=list)
    guest_os_features: list[GuestOsFeature] = Field(default_factory=list)
    licenses: list[str] = Field(default_factory=list)
    architecture: Literal["X86_64", "ARM64"] = "X86_64"
    labels: dict[str, str] = Field(default_factory=dict)
    compute_endpoint: str | None = None
    storage_endpoint: str | None = None
    #: keep the uploaded tarball once the image is READY (default: delete it)
    keep_object: bool = False
    #: seconds to wait for the guest to power on and off (default: the runner's, 24 h)
    watch_timeout: float | None = Field(None, gt=0)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if names.PROJECT.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a project ID (6-30 lowercase letters, digits and "
                             "'-', starting with a letter)")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if names.ZONE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a zone (e.g. us-central1-a)")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if names.BUCKET.fullmatch(value) is None or value.startswith("goog") or ".." in value:
            raise ValueError(f"{value!r} is not a bucket name (3-63 lowercase letters, digits, "
                             "'-', '_' and '.', not starting with 'goog'); give the name, not "
                             "gs://NAME")
        return value

    @field_validator("image_family")
    @classmethod
    def _family(cls, value: str | None) -> str | None:
        if value is not None and not names.is_name(value):
            raise ValueError(f"{value!r} is not a valid image family (1-63 lowercase letters, "
                             "digits and '-', starting with a letter, not ending with '-')")
        return value

    @field_validator("storage_locations")
    @classmethod
    def _locations(cls, value: list[str]) -> list[str]:
        for location in value:
            if names.STORAGE_LOCATION.fullmatch(location) is None:
                raise ValueError(f"{location!r} is not a Cloud Storage location (a region such "
                                 "as us-central1 or a multi-region: us, eu, asia)")
        if len(value) > 1:  # images.insert accepts one location
            raise ValueError(f"an image has one storage location; got {value}")
        return value

    @field_validator("licenses")
    @classmethod
    def _licenses(cls, value: list[str]) -> list[str]:
        for license_ in value:
            if names.LICENSE.fullmatch(license_) is None:
                raise ValueError(f"{license_!r} is not a license URL "
                                 "(projects/PROJECT/global/licenses/NAME)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems = names.label_problems(value)
        taken = [k for k in value if k in RESERVED_LABELS]
        if taken:
            problems.append(f"label {taken[0]!r} is set by layerbot on every image")
        if len(value) > names.MAX_LABELS - len(RESERVED_LABELS):
            problems.append(f"at most {names.MAX_LABELS - len(RESERVED_LABELS)} labels "
                            f"(layerbot adds {len(RESERVED_LABELS)})")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("compute_endpoint", "storage_endpoint")
    @classmethod
    def _endpoints(cls, value: str | None) -> str | None:
        return _endpoint(value)

    @model_validator(mode="after")
    def _credentials(self) -> Config:
        var = self.credentials_file_env
        if var is not None:
            path = os.environ.get(var)
            if not path:
                raise ValueError(f"environment variable {var} (credentials_file_env) is not set")
            if not os.path.isfile(path):
                raise ValueError(f"environment variable {var} (credentials_file_env) names "
                                 f"{path!r}, which is not a file")
        return self
