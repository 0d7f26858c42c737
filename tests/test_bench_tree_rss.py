"""bench/tree_rss.py: the peak RSS the scaling bench prints is the sum over every descendant,
grandchildren included (RUSAGE_CHILDREN gives only the largest single one)."""

from __future__ import annotations

import subprocess
import sys

from bench.tree_rss import TreeRss, descendants, process_rss

HOLD_KIB = 48 * 1024
_GRANDCHILD = (f"import sys; held = b'g' * {HOLD_KIB * 1024}; print('ready', flush=True); "
               "sys.stdin.read()")
# holds as much as the grandchild, starts it, says ready once both hold their memory
_CHILD = (f"import subprocess, sys; held = b'c' * {HOLD_KIB * 1024}; "
          f"p = subprocess.Popen([sys.executable, '-c', {_GRANDCHILD!r}], stdout=subprocess.PIPE, "
          "text=True); assert p.stdout.readline() == 'ready\\n'; print(p.pid, flush=True); "
          "sys.stdin.read(); p.wait()")


def test_the_peak_is_the_sum_over_children_and_grandchildren() -> None:
    """Rooted at the child (this test process may have other children: a session's Azurite),
    the child itself included: the sum is the child's and the grandchild's."""
    with subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            grandchild = int(child.stdout.readline())
            assert grandchild in descendants(child.pid)
            with TreeRss(child.pid, include_root=True) as rss:
                rss.sample()  # both hold their memory now: no waiting for the sampling thread
            alone = process_rss(grandchild)
        finally:
            child.stdin.close()
            child.wait(timeout=60)
    assert alone is not None and alone.kib >= HOLD_KIB and alone.name.startswith("python")
    assert rss.peak_total_kib >= 2 * HOLD_KIB
    assert HOLD_KIB <= rss.peak_process.kib < 2 * HOLD_KIB
    assert sum(rss.at_peak_by_name().values()) == rss.peak_total_kib
    assert rss.samples >= 3  # entering, the explicit one, leaving
