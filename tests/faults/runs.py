"""One publish through faulty peers, as every platform's fault run does it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from adapters.base import Adapter, AdapterError, PublishContext, clean_up, publish
from adapters.resources import R, latest
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


@dataclass(frozen=True)
class AtThePeer:
    #: held at the peer beyond what the task records (must be empty)
    orphans: list[str]
    #: recorded by the task but not at the peer (must be empty)
    missing: list[str]


def compare(found: Iterable[str], kept: Iterable[str]) -> AtThePeer:
    """``found``: everything of the kinds a publish makes at the peer, one line per object
    (a disk attached to a VM is a line of its own, naming the VM); ``kept``: those lines as the
    task's record says they must be after the run (the published result and what belongs to
    it after a success; what is kept by design after a failure). Counted, not compared as sets:
    a second VBD of the same VM and disk is an orphan."""
    held, recorded = Counter(found), Counter(kept)
    return AtThePeer(orphans=sorted((held - recorded).elements()),
                     missing=sorted((recorded - held).elements()))


def recorded(ctx: PublishContext, cls: type[R]) -> R:
    """The newest resource of type ``cls`` the publish recorded (it must have recorded one)."""
    found = latest(ctx.resources, cls)
    assert found is not None, f"the publish recorded no {cls.kind}: {ctx.resources}"
    return found


def published(ctx: PublishContext, cls: type[R]) -> R:
    """``ctx.published.resource`` as ``cls`` (a successful publish set it)."""
    assert ctx.published is not None, "the publish succeeded without setting ctx.published"
    return ctx.published.expect(cls)
