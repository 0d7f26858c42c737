"""The ARM double on a random loopback port over TLS (a trustme CA), and connectors and
clients pointed at it. Test modules import the fixtures they use; ``azurite`` (one per
session) is tests/conftest.py's."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from adapters.azure.arm import Clients
from adapters.azure.azure_config import AzureConfig
from tests.azure.arm_double import ArmDouble, Blobs, server_ssl
from tests.azure.azurite import ACCOUNT, KEY, Azurite
from tests.azure.fast_clients import FAST, StaticCredential, fast_settings, static_clients

__all__ = ["FAST", "StaticCredential"]  # imported from here by the azure tests

SUBSCRIPTION = "3f2c8a6e-5b1d-4c7e-9a0f-1e2d3c4b5a69"
TENANT = "8d7c6b5a-4e3f-4a1b-8c9d-0e1f2a3b4c5d"
CLIENT = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5e"
SECRET = "s3cr3t-Value~ForTheDouble.1"
SECRET_ENV = "LAYERBOT_TEST_AZURE_SECRET"


@dataclass
class Tls:
    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path


@pytest.fixture(scope="session")
def arm_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path_factory.mktemp("arm-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield Tls(ca, cert, ca_file)


async def serve(double: ArmDouble, tls: Tls) -> web.AppRunner:
    runner = web.AppRunner(double.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl(tls.cert))
    await site.start()
    port = runner.addresses[0][1]
    double.base_url = f"https://127.0.0.1:{port}"
    return runner


def make_double(blobs: Blobs | None = None) -> ArmDouble:
    double = ArmDouble(SUBSCRIPTION, TENANT, CLIENT, SECRET, "westeurope", blobs=blobs)
    double.galleries.add("layering/layering_gallery")
    return double


@pytest.fixture
async def arm_double(arm_tls: Tls, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
                     ) -> AsyncIterator[ArmDouble]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    # a container per test: blobs of one test never meet another's
    double = make_double(Blobs(azurite.account_url, ACCOUNT, KEY,
                               container=f"disks{secrets.token_hex(4)}"))
    runner = await serve(double, arm_tls)
    yield double
    await runner.cleanup()


def connector(double: ArmDouble, kind: str = "azure", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": kind, "subscription_id": SUBSCRIPTION, "tenant_id": TENANT,
        "resource_group": "layering", "location": "westeurope", "credential": "client_secret",
        "client_id": CLIENT, "client_secret_env": SECRET_ENV, "arm_endpoint": double.base_url,
        "authority": double.base_url, "os_type": "Linux", "tags": {"owner": "layering"}}
    if kind == "azure-mcs":
        base |= {"gallery": "layering_gallery", "image_definition": "linux-vda",
                 "replication_regions": ["northeurope"]}
    return base | extra


def clients(double: ArmDouble, tls: Tls, *, identity: bool = False, **extra: Any) -> Clients:
    """Clients pointed at the double: through azure-identity (the token endpoint) or a static
    token."""
    if identity:
        return Clients(**(fast_settings(tls.ca_file) | extra))
    return static_clients(double.static_token, tls.ca_file, **extra)


def config(double: ArmDouble, kind: str = "azure", **extra: Any) -> AzureConfig:
    from adapters import config_model

    model = config_model(kind)
    made = model.model_validate(connector(double, kind, **extra))
    assert isinstance(made, AzureConfig)
    return made
