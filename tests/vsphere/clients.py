"""The vSphere adapter's clients with the tests' short polls, in a module of its own (no pytest,
no vcsim): a chaos worker process imports it at start-up (tests/faults/chaos_worker.py)."""

from __future__ import annotations

from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.vsphere import Clients


def short_clients() -> Clients:
    """Short WaitForUpdatesEx calls and import retries (as the runner tests'), and a session
    pool of their own."""
    return Clients(wait_seconds=1, sessions=SessionPool(),
                   import_retry=RetryPolicy(attempts=3, budget=30, first_delay=0.05, max_delay=0.2))
