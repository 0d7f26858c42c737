"""Confirmation intents: what a "Review and publish" card would start.

The card's button carries only the intent id. Clicking it claims the intent with one
atomic UPDATE (unclaimed and not expired), so a double click, two people clicking or
a retried request start the templates exactly once. When starting fails, the claim is
given back (``unclaim``) so the button can be clicked again.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import dataclass

from bot.slack.access import ApprovalRule
from bot.store.interface import Store

TTL_SECONDS = 15 * 60
CANCELLED_MARK = "!cancelled:"
#: who "cancels" an approval nobody answered in time
EXPIRED_BY = "expiry"


@dataclass(frozen=True)
class Intent:
    id: str
    user: str
    channel: str | None
    templates: list[str]
    rule: ApprovalRule
    created_at: float
    expires_at: float
    claimed_by: str | None
    claimed_at: float | None
    #: where the approval card was posted (a card in a channel, edited when it expires)
    card_channel: str | None = None
    card_ts: str | None = None

    @property
    def cancelled(self) -> bool:
        return bool(self.claimed_by and self.claimed_by.startswith(CANCELLED_MARK))

    @property
    def expired(self) -> bool:
        """Its card was closed as expired (see :meth:`IntentStore.expire_cards`)."""
        return self.claimed_by == CANCELLED_MARK + EXPIRED_BY


class Claim(enum.Enum):
    CLAIMED = "claimed"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class IntentStore:
    def __init__(self, store: Store, ttl: float = TTL_SECONDS) -> None:
        self.store = store
        self.ttl = ttl

    def create(self, user: str, channel: str | None, templates: list[str],
               rule: ApprovalRule, *, intent_id: str | None = None) -> tuple[Intent, bool]:
        """A new intent, and True. With a fixed ``intent_id`` (a retry of one task) a live
        intent of that id — unexpired and not cancelled, used or not — is returned instead,
        with False, so repeated clicks never lead to two approvals; an expired or cancelled
        one is replaced."""
        now = time.time()
        with self.store.transaction():
            if intent_id is not None:
                live = self.get(intent_id)
                if live is not None and not live.cancelled and (
                        live.claimed_by is not None or live.expires_at > now):
                    return live, False
                self.store.execute("DELETE FROM slack_intents WHERE id = ?", [intent_id])
            intent_id = intent_id or "i" + secrets.token_urlsafe(12)
            self.store.execute(
                "INSERT INTO slack_intents (id, \"user\", channel, templates, rule, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [intent_id, user, channel, json.dumps(templates), rule, now, now + self.ttl],
            )
        intent = self.get(intent_id)
        assert intent is not None
        return intent, True

    def get(self, intent_id: str) -> Intent | None:
        rows = list(self.store.rows("SELECT * FROM slack_intents WHERE id = ?", [intent_id]))
        if not rows:
            return None
        row = rows[0]
        return Intent(id=row["id"], user=row["user"], channel=row["channel"],
                      templates=json.loads(row["templates"]), rule=row["rule"],
                      created_at=row["created_at"], expires_at=row["expires_at"],
                      claimed_by=row["claimed_by"], claimed_at=row["claimed_at"],
                      card_channel=row.get("card_channel"), card_ts=row.get("card_ts"))

    def set_card(self, intent_id: str, channel: str, ts: str) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE slack_intents SET card_channel = ?, card_ts = ? WHERE id = ?",
                               [channel, ts, intent_id])

    def expire_cards(self, *, now: float | None = None) -> list[Intent]:
        """Close every posted card that expired unanswered; each is returned once, to edit."""
        now = time.time() if now is None else now
        due = self.store.rows(
            "SELECT id FROM slack_intents WHERE card_ts IS NOT NULL AND claimed_by IS NULL"
            " AND expires_at <= ?", [now])
        closed = []
        for row in due:
            with self.store.transaction():
                changed = self.store.execute(
                    "UPDATE slack_intents SET claimed_by = ?, claimed_at = ?"
                    " WHERE id = ? AND claimed_by IS NULL", [CANCELLED_MARK + EXPIRED_BY, now, row["id"]])
            if changed == 1 and (intent := self.get(row["id"])) is not None:
                closed.append(intent)
        return closed

    def claim(self, intent_id: str, by: str, *, now: float | None = None) -> Claim:
        """Take the intent for ``by``; exactly one caller ever gets CLAIMED."""
        now = time.time() if now is None else now
        with self.store.transaction():
            changed = self.store.execute(
                "UPDATE slack_intents SET claimed_by = ?, claimed_at = ?"
                " WHERE id = ? AND claimed_by IS NULL AND expires_at > ?",
                [by, now, intent_id, now],
            )
            if changed == 1:
                return Claim.CLAIMED
        intent = self.get(intent_id)
        if intent is None:
            return Claim.UNKNOWN
        if intent.claimed_by is not None:
            return Claim.USED
        return Claim.EXPIRED

    def unclaim(self, intent_id: str, by: str) -> bool:
        """Give back ``by``'s claim when starting failed, so the card's button works again
        (tasks already queued for it are not queued twice: they have idempotency keys).
        False when the intent is not claimed by ``by`` (e.g. it was cancelled)."""
        with self.store.transaction():
            changed = self.store.execute(
                "UPDATE slack_intents SET claimed_by = NULL, claimed_at = NULL"
                " WHERE id = ? AND claimed_by = ?",
                [intent_id, by],
            )
        return changed == 1

    def cancel(self, intent_id: str, by: str) -> Claim:
        """Withdraw an unclaimed intent so its card can no longer start anything."""
        return self.claim(intent_id, CANCELLED_MARK + by)

    def purge(self, older_than: float = 7 * 24 * 3600) -> int:
        with self.store.transaction():
            changed = self.store.execute(
                "DELETE FROM slack_intents WHERE expires_at < ?", [time.time() - older_than]
            )
        return changed
