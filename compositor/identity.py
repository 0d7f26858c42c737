"""Everything a disk would otherwise take from the clock or a random source, fixed per cache key.

The same layers and settings (one raw cache key) give a byte-identical disk, so two runners, or
a cache miss and a rebuild, publish the same bytes. Identifiers (filesystem UUID, directory hash
seed, GPT GUIDs, NTFS serial) derive from the raw key; times are the build epoch: the newest
mtime in the layers (the reproducible-builds SOURCE_DATE_EPOCH convention), which the key
covers because layer digests include every mtime. Formats converted from the raw disk take their
ids from the same key (format_identity.py) and a fixed time (CONVERTED_TIME).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from .layertree import LayerTree
from .meta import Meta

_NAMESPACE = uuid.UUID("0f3c6a55-1a0e-4d5e-9f55-6b1f1c2a7e31")
_NS_PER_SECOND = 1_000_000_000


#: The time converted formats record (VHD footer, gce-tar header): 2000-01-01T00:00:00Z, the VHD
#: epoch. Not the build epoch: a raw disk found in the cache is converted without reading its
#: layers, so the epoch is unknown then.
CONVERTED_TIME = 946_684_800


@dataclass(frozen=True)
class KeyIdentity:
    """Identifiers that look random but derive from a cache key (the seed)."""

    #: the raw disk's cache key
    seed: str

    def uuid(self, purpose: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{purpose}:{self.seed}")

    def token(self, purpose: str, hex_digits: int) -> str:
        """A hex string for names that must look random but be the same on every rebuild."""
        return hashlib.sha256(f"{purpose}:{self.seed}".encode()).hexdigest()[:hex_digits]


@dataclass(frozen=True)
class DiskIdentity(KeyIdentity):
    #: seconds since 1970; at least 1, since e2fsprogs reads E2FSPROGS_FAKE_TIME=0 as "unset"
    epoch: int

    def e2fsprogs_env(self) -> dict[str, str]:
        """libext2fs stamps new inodes and the superblock with this instead of the clock;
        e2fsck keeps its own clock (E2FSCK_TIME)."""
        return {"E2FSPROGS_FAKE_TIME": str(self.epoch), "E2FSCK_TIME": str(self.epoch)}


def build_epoch(trees: Iterable[LayerTree]) -> int:
    newest = 0
    for tree in trees:
        meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
        for entry in meta.values():
            newest = max(newest, entry.mtime_ns)
    return max(1, newest // _NS_PER_SECOND)
