"""docs/guests.md says which Debian package the registry tools come from, as the code does."""

from __future__ import annotations

import re
from pathlib import Path

from compositor.tools import PACKAGES

GUESTS = Path(__file__).resolve().parents[2] / "docs" / "guests.md"


def test_guests_doc_explains_hivexsh_instead_of_hivexregedit() -> None:
    text = " ".join(GUESTS.read_text().split())
    assert PACKAGES["hivexsh"] == PACKAGES["hivexget"] == "libhivex-bin"
    assert "hivexregedit" not in PACKAGES
    # the tool the issue asked for, the package it is really in, and why ours is equivalent
    assert re.search(r"`hivexregedit`.*not in `libhivex-bin`.*`libwin-hivex-perl`", text)
    assert "same libhivex library" in text
    assert re.search(r"`setval` replaces \*all\* values", text)
