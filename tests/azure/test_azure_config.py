"""Azure connector settings are checked at load, each error naming its key and value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters import config_model
from adapters.azure.azure_config import check_version_pattern, render_version
from adapters.azure.managed_disk import azure_name

SUB = "3f2c8a6e-5b1d-4c7e-9a0f-1e2d3c4b5a69"
BASE = {"subscription_id": SUB, "tenant_id": "contoso.onmicrosoft.com",
        "resource_group": "layering", "location": "westeurope"}


def load(kind: str = "azure", **extra: Any) -> Any:
    fields = {"type": kind, **BASE, **extra}
    if kind == "azure-mcs":
        fields = {"gallery": "g1", "image_definition": "win10", **fields}
    return config_model(kind).model_validate(fields)


def problem(kind: str = "azure", **extra: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        load(kind, **extra)
    [error] = raised.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_defaults_and_case_of_os_state() -> None:
    cfg = load(os_state="specialized", os_type="linux")
    assert (cfg.os_state, cfg.os_type, cfg.hyper_v_generation, cfg.credential) == (
        "Specialized", "Linux", "V2", "default")


def test_bad_values_name_their_key() -> None:
    assert problem(subscription_id="not-a-uuid").startswith("subscription_id: ")
    assert problem(hyper_v_generation="V3").startswith("hyper_v_generation: ")
    assert problem(disk_sku="Fast_LRS").startswith("disk_sku: ")
    assert problem(arm_endpoint="http://127.0.0.1:1") == (
        "arm_endpoint: Value error, arm_endpoint must be an https:// URL, got 'http://127.0.0.1:1'")
    assert "tag name 'a/b'" in problem(tags={"a/b": "x"})
    assert problem(unknown=1).startswith("unknown: Extra inputs")


def test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "credential: client_secret needs client_id and client_secret_env" in problem(
        credential="client_secret")
    monkeypatch.delenv("AZ_SECRET", raising=False)
    assert "environment variable AZ_SECRET (client_secret_env) is not set" in problem(
        credential="client_secret", client_id=SUB, client_secret_env="AZ_SECRET")
    monkeypatch.setenv("AZ_SECRET", "x")
    assert load(credential="client_secret", client_id=SUB, client_secret_env="AZ_SECRET")
    assert "client_secret_env is used only with credential: client_secret" in problem(
        credential="managed_identity", client_secret_env="AZ_SECRET")
    assert load(credential="managed_identity", client_id=SUB).client_id == SUB


def test_version_pattern_gives_three_32_bit_numbers() -> None:
    when = datetime(2026, 1, 5, 9, 30, 7, tzinfo=UTC)
    assert render_version("{yyyy}.{mm}{dd}.{hhmm}", when) == "2026.105.930"
    assert check_version_pattern("{yyyy}.{mm}{dd}.{hhmm}")
    assert "the major number can reach 9999123123, more than Azure's 32-bit limit" in problem(
        "azure-mcs", version="{yyyy}{mm}{dd}{hh}.1.{ss}")
    assert "three numbers" in problem("azure-mcs", version="{yyyy}.{mm}{dd}")
    assert "unknown placeholder {month}" in problem("azure-mcs", version="{yyyy}.{month}.1")
    assert "only digits, dots and placeholders" in problem("azure-mcs", version="v{yyyy}.1.1")
    assert "[0]: 'West Europe' is not an Azure region name" in problem(
        "azure-mcs", replication_regions=["West Europe"])
    assert load("azure-mcs", replication_regions=["northeurope", "westeurope"]).regions() == [
        "westeurope", "northeurope"]


def test_names_fit_azure_80_characters() -> None:
    long = "t" * 70 + "-20261202-010101-a1b2c3"
    name = azure_name(long, "-upload")
    assert len(name) == 80 and name.endswith("-20261202-010101-a1b2c3-upload")
