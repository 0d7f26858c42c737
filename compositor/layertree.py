"""One layer made ready for merging: its entries on disk, their metadata, its whiteouts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CompositorError
from .spec import LayerKind


class BuildCancelled(CompositorError):
    """Raised inside worker threads when the build task was cancelled."""

    def __init__(self) -> None:
        super().__init__("the build was cancelled")


def check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise BuildCancelled()


@dataclass
class LayerTree:
    name: str
    kind: LayerKind
    root: Path
    #: True: the compositor extracted root itself and may move its entries (rename).
    #: False: root is the user's directory; entries are hard-linked (or copied) and never changed.
    owned: bool
    meta: dict[str, object] = field(default_factory=dict)  # rel path -> Meta
    whiteouts: list[str] = field(default_factory=list)  # rel paths deleted from lower layers
    opaque: list[str] = field(default_factory=list)  # rel dirs whose lower children are hidden
