"""One publish through faulty peers, as every platform's fault run does it."""

from __future__ import annotations

from collections.abc import Callable

from adapters.base import Adapter, AdapterError, PublishContext, clean_up, publish
from adapters.steps import Outcome


async def publish_under_faults(adapter: Adapter, ctx: PublishContext, heal: Callable[[], None],
                               check_error: Callable[[str], None]) -> str | None:
    """Publish; if it fails, heal the peers, check the message (``check_error`` asserts) and
    clean up as the runner does after a failure. The adapter is closed in any case. Returns the
    failure's message, None when the publish succeeded."""
    error: str | None = None
    try:
        try:
            await publish(adapter, ctx)
        except AdapterError as exc:
            error = str(exc)
        heal()
        if error is not None:
            check_error(error)
            await clean_up(adapter, ctx, Outcome.FAILED)
    finally:
        await adapter.close()
    return error
