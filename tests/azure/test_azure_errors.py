"""ARM's refusals as layerbot adapter errors keeping Azure's code and message, and the token's
audience: a credential asking for another resource's scope is refused by ARM."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import create
from adapters.azure.arm_errors import AzureAdapterError, adapter_error
from adapters.base import AdapterError, AuthError, PlatformError, RetryableError, publish
from tests.azure.arm_double import ArmDouble
from tests.azure.arm_fixtures import (
    CLIENT,
    SECRET,
    TENANT,
    Tls,
    arm_double,
    arm_tls,
    clients,
    config,
)
from tests.azure.test_azure_publish import context, vhd

__all__ = ["arm_double", "arm_tls"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]

REFUSALS = [
    (403, "AuthorizationFailed", "The client '1a2b' with object id '1a2b' does not have "
     "authorization to perform action 'Microsoft.Compute/disks/write' over scope "
     "'/subscriptions/3f2c/resourceGroups/layering' or the scope is invalid.", AuthError),
    (409, "Conflict", "The resource 'failing-upload' is being modified by another operation.",
     PlatformError),
    (409, "OperationNotAllowed", "Operation 'Create' is not allowed: the disk is attached to a VM.",
     PlatformError),
    (409, "QuotaExceeded", "Operation results in exceeding quota limits of Disk count. Maximum "
     "allowed: 50000, Current in use: 50000, Additional requested: 1.", PlatformError),
]


@pytest.mark.parametrize(("status", "code", "message", "kind"), REFUSALS,
                         ids=[r[1] for r in REFUSALS])
async def test_an_arm_refusal_keeps_azures_code_and_message(
        arm_double: ArmDouble, arm_tls: Tls, tmp_path: Path, status: int, code: str,
        message: str, kind: type[AdapterError]) -> None:
    arm_double.refuse("PUT", "disks", status, code, message)
    adapter = create(config(arm_double), clients(arm_double, arm_tls))
    ctx = context(vhd(tmp_path / "e.vhd"), "failing")
    try:
        with pytest.raises(AdapterError) as raised:
            await publish(adapter, ctx)
        error = raised.value
        assert isinstance(error, kind) and not isinstance(error, RetryableError)
        assert isinstance(error, AzureAdapterError) and error.code == code
        assert str(error) == f"Azure: creating the upload disk failing-upload: {code}: {message}"
        assert arm_double.count("PUT", "disks") == 1  # not retried
        assert arm_double.disks == {}
    finally:
        await adapter.close()


async def test_a_token_for_another_audience_is_refused_by_arm(
        arm_double: ArmDouble, arm_tls: Tls) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.identity.aio import ClientSecretCredential
    from azure.mgmt.compute.aio import ComputeManagementClient

    async def read_disk(scope: str) -> None:
        credential = ClientSecretCredential(TENANT, CLIENT, SECRET, authority=arm_double.base_url,
                                            connection_verify=str(arm_tls.ca_file))
        async with credential, ComputeManagementClient(
                credential, arm_double.subscription_id, base_url=arm_double.base_url,
                credential_scopes=[scope], connection_verify=str(arm_tls.ca_file)) as client:
            await client.disks.get("layering", "absent")

    # the right scope gets through to ARM, which answers for the disk
    with pytest.raises(HttpResponseError) as found:
        await read_disk(f"{arm_double.base_url}/.default")
    assert found.value.status_code == 404
    # public Azure's scope against this (sovereign-like) endpoint: a token ARM refuses
    with pytest.raises(HttpResponseError) as refused:
        await read_disk("https://management.azure.com/.default")
    error = adapter_error(refused.value, "reading the disk absent")
    assert isinstance(error, AuthError) and error.code == "InvalidAuthenticationToken"  # type: ignore[attr-defined]
    assert "wrong audience or resource 'https://management.azure.com'" in str(error)
    assert arm_double.token_requests == 2


def test_an_answer_cut_short_is_retryable_and_names_no_raw_error() -> None:
    """azure-core raises IncompleteReadError (an HttpResponseError without a status) when the
    connection drops mid-answer: the same as a reset, worth another try."""
    import aiohttp
    from azure.core.exceptions import IncompleteReadError

    cut = aiohttp.ClientPayloadError("Response payload is not completed")
    error = adapter_error(IncompleteReadError(cut, error=cut), "reading the upload disk d1-upload")
    assert isinstance(error, RetryableError) and error.retryable
    assert str(error) == ("Azure: reading the upload disk d1-upload: the answer was cut short "
                          "(the connection dropped)")
