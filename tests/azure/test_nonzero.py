"""The range arithmetic and the zero-page scan behind the page upload, against the obvious
page-by-page model."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.azure_blob.nonzero import (
    PAGE,
    data_extents,
    merged,
    nonzero_runs,
    split,
    subtract,
    total,
)

from .conftest import nonzero_pages

ranges = st.lists(st.tuples(st.integers(0, 64), st.integers(0, 64)), max_size=12).map(
    lambda pairs: [(a * PAGE, b * PAGE) for a, b in pairs])


def pages(items: list[tuple[int, int]]) -> set[int]:
    return {p for start, end in items for p in range(start, end, PAGE)}


@settings(max_examples=200, deadline=None)
@given(ranges, ranges)
def test_merged_and_subtract_agree_with_sets_of_pages(a: list[tuple[int, int]],
                                                      b: list[tuple[int, int]]) -> None:
    left, right = merged(a), merged(b)
    assert pages(left) == pages(a)
    assert all(x[1] < y[0] for x, y in itertools.pairwise(left))  # sorted, not touching
    assert pages(list(subtract(left, right))) == pages(a) - pages(b)


@settings(max_examples=100, deadline=None)
@given(ranges, st.integers(1, 9))
def test_split_keeps_every_page_in_pieces_no_longer_than_the_limit(
        a: list[tuple[int, int]], limit_pages: int) -> None:
    pieces = list(split(merged(a), limit_pages * PAGE))
    assert pages(pieces) == pages(a) and total(pieces) == total(merged(a))
    assert all(0 < end - start <= limit_pages * PAGE for start, end in pieces)


def test_runs_are_the_nonzero_pages_across_windows_extents_and_a_short_last_page(
        tmp_path: Path) -> None:
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(9 * 2**20 + 700)  # not a whole number of pages: the last one is short
        f.write(os.urandom(3000))  # ends inside a page
        f.seek(2**20 - 512)  # a run across a window boundary (windows of 1 MiB below)
        f.write(b"\1" * 1024)
        f.seek(4 * 2**20)
        f.write((bytes(512) + b"\2" * 512) * 300 + bytes(8192) + b"\3" * 70_000)
        f.seek(9 * 2**20 + 600)
        f.write(b"\4")
    size = path.stat().st_size
    with open(path, "rb") as f:
        extents = data_extents(f.fileno(), size)
        runs = list(nonzero_runs(f.fileno(), extents, window=2**20))
    assert total(extents) < size / 2  # the holes were not read
    expected = nonzero_pages(path)
    expected[-1] = (expected[-1][0], size)  # nonzero_pages pads the short page to 512
    assert runs == expected


def test_a_file_of_only_a_hole_has_no_extents(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    with open(path, "wb") as f:
        f.truncate(2**20)
    with open(path, "rb") as f:
        assert list(nonzero_runs(f.fileno(), data_extents(f.fileno(), 2**20))) == []
