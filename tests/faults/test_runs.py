"""The comparison of what a peer holds with what a task records (tests/faults/runs.py)."""

from __future__ import annotations

from tests.faults.runs import AtThePeer, compare


def test_a_peer_holding_exactly_the_record_is_clean() -> None:
    found = ["vm 1", "vbd 1 0 -> vdi 2", "vdi 2"]
    assert compare(found, reversed(found)) == AtThePeer(orphans=[], missing=[])


def test_a_second_copy_of_a_recorded_object_is_an_orphan() -> None:
    """Counted, not compared as sets: a duplicate create retried after the peer acted."""
    left = compare(["vm 1", "disk of vm 1", "disk of vm 1", "image 9"], ["vm 1", "disk of vm 1"])
    assert left == AtThePeer(orphans=["disk of vm 1", "image 9"], missing=[])


def test_what_the_record_names_but_the_peer_lacks_is_missing() -> None:
    assert compare(["vm 1"], ["vm 1", "vif 1 on lan"]) == AtThePeer(orphans=[], missing=["vif 1 on lan"])


def test_after_a_failure_everything_found_is_an_orphan() -> None:
    assert compare(["blob a", "disk b"], []).orphans == ["blob a", "disk b"]
