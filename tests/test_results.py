"""The result line (`ResultLine`) and the run's side-file names (`RunFiles`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from state_support import CAP, SVC, line_for

from pipeline.core.errors import StateError
from pipeline.core.results import ItemStatus, ResultLine, RunFiles

RESULT_KEYS = ["id", "analysis", "capability", "service_id", "status", "task_id", "data", "usage", "error",
               "attempts", "polls", "submitted_at", "finished_at", "elapsed_s", "meta"]


def test_result_line_has_exactly_the_documented_keys_in_order():
    """to_json writes the documented keys, in the documented order, no more and no fewer."""
    for line in (line_for("a"), line_for("b", "FAILED", "TaskFailed")):
        assert list(json.loads(line.to_json())) == RESULT_KEYS


def test_result_line_values():
    """Timestamps are ISO-8601 UTC with a Z, elapsed_s is finished minus submitted, meta is copied untouched."""
    meta = {"source": "catalog", "n": [1, 2]}
    line = ResultLine.finished(id="x", capability=CAP, service_id=SVC, status=ItemStatus.FAILED, task_id="t",
                               usage={"pages": 1}, error={"code": "TaskFailed", "message": "m", "http_status": 200},
                               attempts=2, polls=3, submitted_at=0.0, finished_at=2.25, meta=meta)
    record = json.loads(line.to_json())
    assert record["submitted_at"] == "1970-01-01T00:00:00.000Z"
    assert record["finished_at"] == "1970-01-01T00:00:02.250Z"
    assert record["elapsed_s"] == 2.25
    assert record["meta"] == meta and record["status"] == "FAILED"
    assert (record["attempts"], record["polls"], record["task_id"]) == (2, 3, "t")
    assert line.error_code == "TaskFailed"


def test_result_line_without_submit_time():
    """A sync item with no submit time has null submitted_at and elapsed_s."""
    line = ResultLine.finished(id="x", capability=CAP, service_id=SVC, status=ItemStatus.SUCCESS, finished_at=5.0)
    assert line.submitted_at is None and line.elapsed_s is None
    assert line.finished_at == "1970-01-01T00:00:05.000Z"


def test_result_line_round_trips():
    """from_json(to_json(line)) gives the same line back."""
    line = line_for("a", meta={"k": "é"}, usage={"pv_count": 1})
    assert ResultLine.from_json(line.to_json()) == line


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not a JSON line"),
    ("[1, 2]", "not a JSON object"),
    ('{"name": "x"}', "not a result line"),
    ('{"id": "a", "capability": "c", "status": "MAYBE"}', "unknown status"),
])
def test_from_json_refuses_what_is_not_a_result_line(text, message):
    """Lines of another file give a StateError that says where and what, never a KeyError."""
    with pytest.raises(StateError, match=message) as info:
        ResultLine.from_json(text, where="results.jsonl at byte 7")
    assert "results.jsonl at byte 7" in str(info.value)


def test_run_files_names():
    """Side files sit next to the results file; the state dir defaults to <results>.state."""
    files = RunFiles.for_results(Path("/x/results.jsonl"))
    assert files.rejects == Path("/x/results.rejects.jsonl")
    assert files.summary == Path("/x/results.summary.json")
    assert files.state_dir == Path("/x/results.jsonl.state")
    assert RunFiles.for_results(Path("r.jsonl"), Path("/s")).state_dir == Path("/s")
