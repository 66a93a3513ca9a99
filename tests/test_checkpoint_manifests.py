"""The run's manifests in the checkpoint: their counts, and the upgrade of state dirs that kept them
as meta keys (read as they are by a read-only open, moved into the table by the first writable one)."""

from __future__ import annotations

import pytest
from state_support import meta_of, previous_state_dir, tables_of

from pipeline.state.checkpoint import Checkpoint
from pipeline.state.manifests import ManifestRow, legacy_rows


def test_manifest_counts_of_a_session_stopped_part_way_never_go_down(ckpt):
    """A session that stopped before the end of its manifest saw fewer rejects: the count keeps the
    larger one, and the item total stays unknown until a session reads the manifest to its end."""
    ckpt.add_manifest("m")
    ckpt.save_manifest_counts("m", rejected=3, items=None)
    ckpt.save_manifest_counts("m", rejected=1, items=None)
    assert (ckpt.rejected_lines(), ckpt.item_count()) == (3, None)
    ckpt.add_manifest("n")
    ckpt.save_manifest_counts("m", rejected=1, items=10)
    assert (ckpt.manifests(), ckpt.rejected_lines(), ckpt.item_count()) == (["m", "n"], 1, None)


def test_items_an_appended_manifest_shares_count_once(ckpt):
    """The item total is the manifests' items less those an appended manifest shares with earlier
    ones; the shared count only grows (a later session that saw fewer does not lower it)."""
    ckpt.add_manifest("m")
    ckpt.save_manifest_counts("m", rejected=0, items=4)
    ckpt.add_manifest("n")
    ckpt.save_manifest_counts("n", rejected=2, items=5, shared=2)
    ckpt.save_manifest_counts("n", rejected=2, items=5, shared=1)
    assert (ckpt.item_count(), ckpt.rejected_lines()) == (7, 2)


def test_a_manifest_joins_once_and_the_last_to_join_is_current(ckpt):
    """Adding a manifest the run has keeps it where it is; the order is the order they joined."""
    for name in ("a", "b", "a", "c"):
        ckpt.add_manifest(name)
    assert ckpt.manifests() == ["a", "b", "c"]


def test_the_catalog_is_empty_only_when_every_manifest_was_read_empty(ckpt):
    """catalog_empty needs every manifest read to its end with no item; one unknown or non-empty is enough to say no."""
    assert not ckpt.catalog_empty()  # no manifest at all
    ckpt.add_manifest("a")
    ckpt.set_empty("a", True)
    assert ckpt.catalog_empty()
    ckpt.add_manifest("b")
    assert not ckpt.catalog_empty()  # b not read yet
    ckpt.set_empty("b", False)
    assert not ckpt.catalog_empty()


@pytest.mark.parametrize(("meta", "rows"), [
    ({}, []),
    # before --append: the one manifest was `manifest`
    ({"manifest": "/d/old.jsonl", "rejected:/d/old.jsonl": "2", "items:/d/old.jsonl": "5"},
     [ManifestRow("/d/old.jsonl", rejected=2, items=5)]),
    # `manifests` wins over `manifest`; counts absent are 0, items absent unknown, empty kept as "1"/"0"
    ({"manifests": "/a\n/b", "manifest": "/b", "items:/a": "0", "empty:/a": "1", "shared:/b": "3",
      "empty:/b": "0"},
     [ManifestRow("/a", items=0, empty=True), ManifestRow("/b", shared=3, empty=False)]),
    # a name listed twice is one manifest; stdin is a name like any other
    ({"manifests": "-\n/a\n-", "rejected:-": "1"}, [ManifestRow("-", rejected=1), ManifestRow("/a")]),
])
def test_legacy_meta_keys_read_as_manifest_rows(meta, rows):
    """The meta keys an earlier version kept per manifest read as the rows the table holds today."""
    assert legacy_rows(meta) == rows


LEGACY = {"manifests": "/data/day1.jsonl\n/data/day2.jsonl", "manifest": "/data/day2.jsonl",
          "rejected:/data/day1.jsonl": "2", "items:/data/day1.jsonl": "5", "empty:/data/day1.jsonl": "0",
          "rejected:/data/day2.jsonl": "1", "items:/data/day2.jsonl": "4", "shared:/data/day2.jsonl": "3",
          "empty:/data/day2.jsonl": "0", "out": "/data/results.jsonl", "sink_offset": "0"}


def _facts(ckpt: Checkpoint) -> tuple[list[str], int, int | None, bool]:
    return ckpt.manifests(), ckpt.rejected_lines(), ckpt.item_count(), ckpt.catalog_empty()


def test_a_state_dir_with_manifests_in_meta_keys_is_read_as_it_is_then_upgraded_once(tmp_path):
    """A read-only open (status, export) of a state dir from before the manifests table reads its
    meta keys and changes nothing; the first writable open moves them into the table and drops
    them (the other meta keys stay), and later opens read the same facts."""
    state = previous_state_dir(tmp_path / "state", LEGACY)
    expected = (["/data/day1.jsonl", "/data/day2.jsonl"], 3, 6, False)
    reader = Checkpoint.open(state, read_only=True)
    try:
        assert _facts(reader) == expected
    finally:
        reader.close()
    assert "manifests" not in tables_of(state) and meta_of(state)["manifests"] == LEGACY["manifests"]

    for _ in range(2):  # the upgrade, then an open that finds nothing to upgrade
        ckpt = Checkpoint.open(state)
        try:
            assert _facts(ckpt) == expected
        finally:
            ckpt.close()
        left = meta_of(state)
        assert left == {"key_format": "2", "out": "/data/results.jsonl", "sink_offset": "0"}
    reader = Checkpoint.open(state, read_only=True)
    try:
        assert _facts(reader) == expected
    finally:
        reader.close()


def test_a_state_dir_from_before_append_still_counts_its_rejected_lines(tmp_path):
    """A state dir that records only `manifest` (made before --append existed) still lists it after
    the upgrade, so its rejected lines and items count in the run's outcome."""
    state = previous_state_dir(tmp_path / "state", {"manifest": "/data/old.jsonl",
                                                    "rejected:/data/old.jsonl": "2", "items:/data/old.jsonl": "5"})
    ckpt = Checkpoint.open(state)
    try:
        assert _facts(ckpt) == (["/data/old.jsonl"], 2, 5, False)
        ckpt.add_manifest("/data/new.jsonl")  # --append
        ckpt.save_manifest_counts("/data/new.jsonl", rejected=1, items=3, shared=1)
        assert _facts(ckpt) == (["/data/old.jsonl", "/data/new.jsonl"], 3, 7, False)
    finally:
        ckpt.close()


def test_an_upgrade_that_fails_leaves_the_meta_keys_in_place(tmp_path, monkeypatch):
    """The move is one transaction: an error half-way (a full disk) rolls it back, so the next open
    finds the meta keys and upgrades then."""
    from pipeline.state import manifests as manifests_module

    state = previous_state_dir(tmp_path / "state", LEGACY)

    def broken(meta):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifests_module, "legacy_rows", broken)
    with pytest.raises(OSError, match="No space"):
        Checkpoint.open(state)
    assert meta_of(state)["manifests"] == LEGACY["manifests"]
    monkeypatch.undo()
    ckpt = Checkpoint.open(state)
    try:
        assert ckpt.manifests() == ["/data/day1.jsonl", "/data/day2.jsonl"]
    finally:
        ckpt.close()
