"""Waiting for a resource's provisioning to end before deleting it: ARM refuses (409
OperationNotAllowed/Conflict) to delete a disk, image or image version that is still Creating
or Updating, as one is when its task is cancelled while Azure makes it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from adapters.azure.arm import Arm
from adapters.azure.arm_errors import AzureNotFoundError, AzureRetryableError
from adapters.base import Backoff

if TYPE_CHECKING:
    from azure.mgmt.compute.aio import ComputeManagementClient

#: provisioning states in which ARM refuses a delete
BUSY = frozenset({"creating", "updating"})


async def settled(arm: Arm, read: Callable[[ComputeManagementClient], Awaitable[Any]],
                  what: str) -> bool:
    """Wait, polling ``read`` with back-off for at most ``Clients.settle_budget`` seconds,
    until ``what`` is no longer being created or updated. False when it does not exist;
    AzureRetryableError (a later cleanup tries again) when it is still busy at the end."""
    clients = arm.clients
    backoff = Backoff(clients.settle_first, clients.settle_longest)
    deadline = time.monotonic() + clients.settle_budget
    while True:
        try:
            found = await arm.call(read, f"reading {what}")
        except AzureNotFoundError:
            return False
        state = str((found.get("properties") or {}).get("provisioningState") or "")
        if state.lower() not in BUSY:
            return True
        if time.monotonic() + backoff.current > deadline:
            raise AzureRetryableError(
                f"Azure: {what} is still {state} after {clients.settle_budget:.0f} s; Azure "
                "refuses to delete it before that ends, so a later cleanup removes it")
        await backoff.sleep()
