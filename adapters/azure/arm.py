"""How the Azure adapters reach Azure Resource Manager: the injected :class:`Clients`, the
credential per connector, the async compute client and one way to call it (errors mapped,
retried with :func:`adapters.retry.retrying`; a long-running operation's polls retried in
place). azure-identity and azure-mgmt-compute are
imported inside the functions."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.azure.arm_errors import adapter_error
from adapters.azure.azure_config import AzureConfig
from adapters.azure.poll_retry import GetRetryPolicy
from adapters.azure_blob.pages import BlobOptions
from adapters.base import AuthError, secret_from_env
from adapters.retry import RetryPolicy, retrying

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.mgmt.compute.aio import ComputeManagementClient

T = TypeVar("T")
log = logging.getLogger(__name__)
#: times a long-running operation whose polls kept failing is started again
RESTARTS = 2

#: ARM calls: five attempts within five minutes (throttling says how long to wait)
ARM_RETRY = RetryPolicy(attempts=5, budget=300.0, first_delay=2.0, max_delay=60.0)
#: the VM watch's listing: ARM may fail for a while (throttled, a regional outage)
WATCH_RETRY = RetryPolicy(attempts=20, budget=3600.0, first_delay=5.0, max_delay=300.0)

CredentialFactory = Callable[[AzureConfig, "bool | str"], "AsyncTokenCredential"]


def identity_credential(cfg: AzureConfig, verify: bool | str) -> AsyncTokenCredential:
    """The connector's azure-identity credential (see ``AzureConfig.credential``)."""
    from azure.identity.aio import (
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    if cfg.credential == "client_secret":
        assert cfg.client_id is not None and cfg.client_secret_env is not None
        return ClientSecretCredential(cfg.tenant_id, cfg.client_id,
                                      secret_from_env(cfg.client_secret_env),
                                      authority=cfg.authority, connection_verify=verify)
    if cfg.credential == "managed_identity":
        return ManagedIdentityCredential(client_id=cfg.client_id, connection_verify=verify)
    return DefaultAzureCredential(authority=cfg.authority, connection_verify=verify)


@dataclass(frozen=True)
class Clients:
    """How the adapters reach Azure; injected (``adapters.create(config, clients=...)``) by
    tests that point them at the local ARM double and Azurite."""

    #: TLS verification of ARM and the authority: True, or a CA bundle file (the double's)
    connection_verify: bool | str = True
    credential: CredentialFactory = identity_credential
    #: seconds between polls of a long-running operation when ARM gives no Retry-After
    polling_interval: float = 5.0
    arm_retry: RetryPolicy = ARM_RETRY
    #: the VM watch's polling: first and longest sleep between listings
    watch_first: float = 15.0
    watch_longest: float = 300.0
    watch_retry: RetryPolicy = WATCH_RETRY
    #: before a delete, how long to wait for the resource's provisioning to end (ARM refuses
    #: to delete one still Creating): first and longest sleep, and the whole wait
    settle_first: float = 5.0
    settle_longest: float = 60.0
    settle_budget: float = 1800.0
    #: how the page-blob upload reaches the disk's SAS (adapters.azure_blob.pages)
    blob: BlobOptions = field(default_factory=BlobOptions)


def credential_identity(cfg: AzureConfig) -> tuple[Hashable, ...]:
    """Who the connector authenticates as, without the secret (a digest of it)."""
    secret = ""
    if cfg.credential == "client_secret" and cfg.client_secret_env:
        secret = hashlib.sha256(secret_from_env(cfg.client_secret_env).encode()).hexdigest()
    return (cfg.credential, cfg.tenant_id, cfg.client_id, secret, cfg.authority)


class Arm:
    """One connector's compute client and credential, made on first use on the running loop
    (an aiohttp session belongs to one loop), closed by :meth:`close`."""

    def __init__(self, cfg: AzureConfig, clients: Clients) -> None:
        self.cfg = cfg
        self.clients = clients
        self._client: ComputeManagementClient | None = None
        self._credential: AsyncTokenCredential | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def compute(self) -> ComputeManagementClient:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            raise RuntimeError("an Azure adapter is used from a second event loop")
        if self._client is None:
            from azure.mgmt.compute.aio import ComputeManagementClient

            cfg, clients = self.cfg, self.clients
            try:
                self._credential = clients.credential(cfg, clients.connection_verify)
            except ValueError as exc:  # azure-identity refuses a malformed tenant/authority
                raise AuthError(f"Azure: cannot make the {cfg.credential} credential: {exc}") \
                    from None
            self._client = ComputeManagementClient(
                self._credential, cfg.subscription_id, base_url=cfg.arm_endpoint,
                credential_scopes=[f"{cfg.arm_endpoint}/.default"],
                connection_verify=clients.connection_verify,
                polling_interval=clients.polling_interval,
                # GETs (an operation's polls) are retried in place; the rest by self.call
                retry_policy=GetRetryPolicy(clients.arm_retry))
            self._loop = loop
        return self._client

    async def call(self, fn: Callable[[ComputeManagementClient], Awaitable[T]], doing: str,
                   policy: RetryPolicy | None = None) -> T:
        """``await fn(client)``, its Azure errors as adapter errors, retried when retryable
        (``fn`` must be safe to repeat: ARM's PUTs and deletes are)."""
        async def once() -> T:
            from azure.core.exceptions import AzureError

            try:
                return await fn(self.compute())
            except AzureError as exc:
                raise adapter_error(exc, doing) from exc
        return await retrying(once, f"Azure: {doing}", policy or self.clients.arm_retry)

    async def wait(self, begin: Callable[[ComputeManagementClient], Awaitable[Any]],
                   doing: str) -> Any:
        """Start a long-running operation and wait for its end (Succeeded, else an error).
        The start is retried (:meth:`call`); its polls are retried in place by the client's
        :class:`GetRetryPolicy`. Only when they fail past that budget is the operation
        started again (safe: ARM's PUTs and deletes are idempotent), with a budget of its own."""
        from azure.core.exceptions import AzureError

        restarts = 0
        while True:
            poller = await self.call(begin, doing)
            try:
                return await poller.result()
            except AzureError as exc:
                error = adapter_error(exc, doing)
                if not error.retryable or restarts >= RESTARTS:
                    raise error from exc
            restarts += 1
            log.warning("Azure: %s: its status could not be read (%s); starting it again",
                        doing, error)

    async def close(self) -> None:
        client, credential, self._client, self._credential = (self._client, self._credential,
                                                              None, None)
        if client is not None:
            await client.close()
        if credential is not None:
            await credential.close()
