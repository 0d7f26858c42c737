"""Clients pointed at the ARM double with short polls and a static token, importable without
pytest: a chaos worker (tests/faults/chaos_worker.py, another process) makes its own from the
token and CA file its test put in the environment."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from adapters.azure.arm import Clients
from adapters.retry import RetryPolicy

FAST = RetryPolicy(attempts=4, budget=30.0, first_delay=0.01, max_delay=0.05)
#: the double's static token and the CA file its certificate is signed with, for workers
TOKEN_ENV = "LAYERBOT_TEST_ARM_TOKEN"
CA_ENV = "LAYERBOT_TEST_ARM_CA"


class StaticCredential:
    """A token the double accepts without the token endpoint."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass


def fast_settings(ca_file: Path | str) -> dict[str, Any]:
    """Clients settings trusting ``ca_file``, with polls and retries of milliseconds."""
    return {"connection_verify": str(ca_file), "polling_interval": 0.01, "arm_retry": FAST,
            "watch_first": 0.02, "watch_longest": 0.1, "watch_retry": FAST}


def static_clients(token: str, ca_file: Path | str, **extra: Any) -> Clients:
    """Fast clients trusting ``ca_file`` that authenticate with the double's static ``token``."""
    return Clients(**(fast_settings(ca_file)
                      | {"credential": lambda cfg, verify: StaticCredential(token)} | extra))


def worker_clients() -> Clients:
    """A worker process's clients, from its environment; settle polls of milliseconds too (its
    cleanup after a kill meets resources still Creating)."""
    return static_clients(os.environ[TOKEN_ENV], os.environ[CA_ENV], settle_first=0.01,
                          settle_longest=0.1)
