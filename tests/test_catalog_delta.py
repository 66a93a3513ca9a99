"""The pure parts of the catalog: what a fingerprint covers (`core.fingerprint`) and what a run
does with each key read against the checkpoint's row (`engine.delta.decide`), as tables."""

from __future__ import annotations

import dataclasses

import pytest
from engine_support import job

from pipeline.core.fingerprint import file_stamp, fingerprint, object_stamp, source_of, with_fingerprints
from pipeline.engine.delta import Delta, decide
from pipeline.state.catalog import Known
from pipeline.state.jobs import JobState

BASE = job("a", parameters={"x": 1}, meta={"sku": 1})


@pytest.mark.parametrize(("change", "same"), [
    ({"meta": {"sku": 2}}, True),  # copied to the line, never sent
    ({"line": 99}, True),  # where it sits in the manifest
    ({"source": "https://example.com/b.jpg"}, False),
    ({"parameters": {"x": 2}}, False),
    ({"service_id": "ops-image-analyze-vlm-001"}, False),
    ({"output": "oss://b/out/"}, False),
    ({"options": {"o": 1}}, False),
    ({"file_name": "z.jpg"}, False),
    ({"stamp": file_stamp(10, 5)}, False),
    ({"after": "other"}, False),
])
def test_what_the_fingerprint_covers(change, same) -> None:
    """Everything sent or read changes the fingerprint; meta and the line number do not."""
    assert (fingerprint(dataclasses.replace(BASE, **change)) == fingerprint(BASE)) is same


def test_stamps_and_sources() -> None:
    """An ETag is kept without its quotes; inline content is named by its hash, never itself."""
    assert object_stamp('"abc"', 3) == object_stamp("abc", 3) != object_stamp("abc", 4)
    assert file_stamp(1, 2) != file_stamp(1, 3)
    inline = dataclasses.replace(BASE, source_kind="content", source="QUJD")
    assert source_of(inline).startswith("inline:sha256:") and "QUJD" not in source_of(inline)


def test_a_child_carries_its_parents_fingerprint_whatever_the_order() -> None:
    """A chained child's fingerprint changes with its parent's, even when listed before it."""
    parent, child = job("v", analysis="seg"), job("v", analysis="sum", after="seg")
    changed_parent = dataclasses.replace(parent, parameters={"p": 1})
    a = {j.analysis: j.fingerprint for j in with_fingerprints([child, parent])}
    b = {j.analysis: j.fingerprint for j in with_fingerprints([child, changed_parent])}
    assert a["seg"] != b["seg"] and a["sum"] != b["sum"]
    assert a == {j.analysis: j.fingerprint for j in with_fingerprints([parent, child])}


DONE, SUBMITTED, RETRY = JobState.DONE, JobState.SUBMITTED, JobState.RETRY


@pytest.mark.parametrize(("known", "forced", "delta", "counted", "adopt", "restore"), [
    (None, False, Delta.NEW, "new", False, False),
    (None, True, Delta.NEW, "new", False, False),
    (Known(DONE, "fp", None, 0), False, Delta.UNCHANGED, "unchanged", False, False),
    (Known(DONE, "fp", None, 0), True, Delta.CHANGED, "changed", False, False),
    (Known(DONE, "old", None, 0), False, Delta.CHANGED, "changed", False, False),
    (Known(DONE, None, None, 0), False, Delta.UNCHANGED, "unchanged", True, False),  # an older state dir
    (Known(DONE, "fp", 3, 0), False, Delta.UNCHANGED, "unchanged", False, True),  # vanished, back unchanged
    (Known(DONE, "old", 3, 0), False, Delta.CHANGED, "changed", False, False),
    (Known(SUBMITTED, "fp", None, None), False, Delta.RESUME, "new", False, False),
    (Known(SUBMITTED, "fp", None, None), True, Delta.RESUME, "new", False, False),  # never paid twice
    (Known(SUBMITTED, None, None, None), False, Delta.RESUME, "new", True, False),
    (Known(SUBMITTED, "old", None, None), False, Delta.CHANGED, "changed", False, False),
    (Known(RETRY, "fp", None, 120), False, Delta.RESUME, "changed", False, False),  # replaces a line
    (Known(RETRY, "old", None, 120), False, Delta.CHANGED, "changed", False, False),
])
def test_decide(known, forced, delta, counted, adopt, restore) -> None:
    """Each checkpoint row and fingerprint read gives one verdict (engine/delta.py's table)."""
    verdict = decide(known, "fp", forced=forced)
    assert (verdict.delta, verdict.counted, verdict.adopt, verdict.restore) == (delta, counted, adopt, restore)
