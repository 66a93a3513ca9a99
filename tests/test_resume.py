"""Resume preparation: reconcile after crashes, --retry-failed rewriting, paths and run identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from state_support import (
    CAP,
    SVC,
    done_ids,
    encode,
    file_ids,
    key,
    line_for,
    meta_of,
    outcome,
    pending_ids,
    tables_of,
    to_previous_layout,
    write_done,
)

from pipeline.core.errors import StateError, UsageError
from pipeline.core.results import ItemStatus
from pipeline.engine.preflight import check_paths
from pipeline.state import resume as resume_module
from pipeline.state.checkpoint import JobState
from pipeline.state.resume import check_identity, drop_lines, reconcile

FAILED = ItemStatus.FAILED

# ---- reconcile ----------------------------------------------------------------------------


def test_reconcile_with_nothing_to_do(out, ckpt):
    """A missing file with offset 0, or a file exactly at the offset, needs no repair."""
    assert reconcile(out, ckpt) == 0
    write_done(out, ckpt, ["a", "b"])
    before = out.read_bytes()
    assert reconcile(out, ckpt) == 0
    assert out.read_bytes() == before


def test_reconcile_marks_extra_complete_lines_done_without_duplicating(out, ckpt):
    """Complete lines past the recorded offset (crash before mark_done) are marked done, not rewritten."""
    write_done(out, ckpt, ["a", "b"])
    recorded = ckpt.sink_offset()
    ckpt.record_submitted(key("c"), CAP, SVC, "t-c", attempts=1)
    with open(out, "ab") as f:  # the crash came between the file write and mark_done
        f.write(encode(line_for("c", task_id="t-c")) + encode(line_for("d", FAILED, "TaskFailed")))
    size = out.stat().st_size
    assert size > recorded

    assert reconcile(out, ckpt) == 2
    assert done_ids(ckpt) == ["a", "b", "c", "d"]
    assert pending_ids(ckpt) == {}
    assert ckpt.sink_offset() == size
    assert file_ids(out) == ["a", "b", "c", "d"]
    assert {o.key: o.error_code for o in ckpt.outcomes()}[key("d")] == "TaskFailed"
    assert reconcile(out, ckpt) == 0  # idempotent


def test_reconcile_cuts_a_torn_last_line(out, ckpt):
    """A torn last line (no trailing newline) is cut, so the next append starts on a fresh line."""
    write_done(out, ckpt, ["a"])
    with open(out, "ab") as f:
        f.write(encode(line_for("b")))  # complete, not yet marked done
        f.write(encode(line_for("c"))[:25])  # kill -9 mid-write
    assert reconcile(out, ckpt) == 1
    assert out.read_bytes().endswith(b"\n")
    assert ckpt.sink_offset() == out.stat().st_size
    assert done_ids(ckpt) == ["a", "b"]

    with open(out, "ab") as f:  # what the next run's sink does
        f.write(encode(line_for("c")))
    assert file_ids(out) == ["a", "b", "c"]  # every line parses: no glued half line


def test_reconcile_cuts_a_torn_line_right_after_the_offset(out, ckpt):
    """When the only bytes past the offset are a torn line, the file is cut back to the offset."""
    write_done(out, ckpt, ["a"])
    recorded = ckpt.sink_offset()
    with open(out, "ab") as f:
        f.write(b'{"id":"b","capa')
    assert reconcile(out, ckpt) == 0
    assert out.stat().st_size == recorded
    assert done_ids(ckpt) == ["a"]


def test_reconcile_trusts_a_file_shorter_than_the_offset(out, ckpt):
    """A file shorter than the recorded offset wins: its lines are done, the missing done items go back to pending."""
    write_done(out, ckpt, ["a", "b"])
    ckpt.record_submitted(key("c"), CAP, SVC, "t-c", attempts=1)
    ckpt.mark_done([outcome("c", task_id="t-c"), outcome("d")], ckpt.sink_offset() + 10_000)
    with open(out, "ab") as f:
        f.write(b'{"id":"tor')  # and a torn tail, to be cut
    assert reconcile(out, ckpt) == 2
    assert file_ids(out) == ["a", "b"]
    assert ckpt.sink_offset() == out.stat().st_size
    assert done_ids(ckpt) == ["a", "b"]
    pending = pending_ids(ckpt)
    assert set(pending) == {"c", "d"}
    assert (pending["c"].state, pending["c"].task_id) == (JobState.SUBMITTED, "t-c")  # polled, not resubmitted
    assert (pending["d"].state, pending["d"].task_id) == (JobState.RETRY, None)


def test_reconcile_missing_results_file_with_an_offset_raises(out, ckpt):
    """A missing results file when the store records written bytes raises StateError naming the file."""
    ckpt.mark_done([outcome("a")], 100)
    with pytest.raises(StateError, match=r"results\.jsonl"):
        reconcile(out, ckpt)


# ---- drop_lines ---------------------------------------------------------------------------


def test_drop_lines_removes_exactly_the_given_ids(out, ckpt):
    """drop_lines removes the lines of the given ids, keeps every other line byte for byte, and moves the offset."""
    write_done(out, ckpt, ["a", "b", "c", "d"])
    kept = [raw for raw in out.read_bytes().splitlines(keepends=True) if json.loads(raw)["id"] in ("a", "c")]
    assert drop_lines(out, {key("b"), key("d"), key("not-there")}, ckpt) == 2
    assert out.read_bytes() == b"".join(kept)
    assert ckpt.sink_offset() == out.stat().st_size
    assert not out.with_name(out.name + ".rewrite").exists()
    assert reconcile(out, ckpt) == 0  # the new offset agrees with the file


def test_drop_lines_with_nothing_to_drop(out, ckpt):
    """An empty id set, or a missing file, changes nothing."""
    assert drop_lines(out, {key("a")}, ckpt) == 0
    write_done(out, ckpt, ["a"])
    before = out.read_bytes()
    assert drop_lines(out, set(), ckpt) == 0
    assert out.read_bytes() == before


def test_drop_lines_is_atomic(out, ckpt, monkeypatch):
    """If the rewrite fails before the rename, the results file and the offset are untouched."""
    write_done(out, ckpt, ["a", "b"])
    before, offset = out.read_bytes(), ckpt.sink_offset()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(resume_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        drop_lines(out, {key("a")}, ckpt)
    assert out.read_bytes() == before
    assert ckpt.sink_offset() == offset


def test_retry_failed_round_trip(out, ckpt):
    """reopen_failed then drop_lines leaves only the successes in the file, and reconcile keeps it so."""
    with open(out, "ab") as f:
        lines = (line_for("ok"), line_for("bad", FAILED, "TaskFailed"), line_for("inv", FAILED, "InvalidParameter"))
        for ln in lines:
            f.write(encode(ln))
    assert reconcile(out, ckpt) == 3
    reopened = ckpt.reopen_failed(skip_codes=("InvalidParameter",))
    assert reopened == [key("bad")]
    assert drop_lines(out, ckpt.keys_in_state(JobState.RETRY), ckpt) == 1
    assert file_ids(out) == ["ok", "inv"]
    assert reconcile(out, ckpt) == 0
    assert set(pending_ids(ckpt)) == {"bad"}




# ---- results files that are not this run's -----------------------------------------------


def test_reconcile_refuses_a_non_json_line_with_its_place(out, ckpt):
    """A garbage line past the recorded offset stops with a StateError naming the file and byte, not a traceback."""
    write_done(out, ckpt, ["a"])
    offset = out.stat().st_size
    with open(out, "ab") as f:
        f.write(b"this is not json\n")
    with pytest.raises(StateError, match=rf"results\.jsonl at byte {offset}: not a JSON line"):
        reconcile(out, ckpt)


def test_reconcile_refuses_a_foreign_jsonl_line(out, ckpt):
    """A JSON line that is not a result line (no id/status) is refused with a clear message, not a KeyError."""
    with open(out, "wb") as f:
        f.write(b'{"name": "something else"}\n')
    with pytest.raises(StateError, match="not a result line"):
        reconcile(out, ckpt)


def test_a_cut_short_file_repolls_async_items_and_resubmits_only_sync_ones(out, ckpt, caplog):
    """Items whose lines were cut off go back to 'submitted' when a task id is recorded (polled, never paid
    again) and to 'retry' only without one; a warning says how many of each."""
    write_done(out, ckpt, ["kept"])
    write_done(out, ckpt, ["async-lost"], task_id="t-1")
    write_done(out, ckpt, ["sync-lost"])
    keep = len(encode(line_for("kept")))
    with open(out, "r+b") as f:
        f.truncate(keep)
    reconcile(out, ckpt)
    pending = pending_ids(ckpt)
    assert pending["async-lost"].state is JobState.SUBMITTED and pending["async-lost"].task_id == "t-1"
    assert pending["sync-lost"].state is JobState.RETRY
    assert "1 recorded tasks will be polled again" in caplog.text
    assert "1 items without a task id" in caplog.text


# ---- paths and identity -------------------------------------------------------------------


def test_out_may_not_be_the_manifest(tmp_path):
    """--out equal to the manifest is refused before anything is touched."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a"}\n')
    with pytest.raises(UsageError, match="is the manifest itself"):
        check_paths(str(manifest), manifest)
    assert manifest.read_text() == '{"id": "a"}\n'


@pytest.mark.parametrize("target", ["dir", "/dev/null"])
def test_out_must_be_a_regular_file(tmp_path, target):
    """A directory or a device as --out is refused (no /dev/null.summary.json side files)."""
    out = tmp_path if target == "dir" else Path(target)
    with pytest.raises(UsageError, match=r"directory|not a regular file"):
        check_paths(str(tmp_path / "m.jsonl"), out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_out_in_an_unwritable_directory_is_refused(tmp_path):
    """An --out whose directory cannot be written is a usage error before the run starts."""
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="cannot create files"):
        check_paths("m.jsonl", locked / "out.jsonl")


def test_out_under_a_file_is_refused(tmp_path):
    """An --out whose 'directory' is a file is refused (works as root too)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create files"):
        check_paths("m.jsonl", blocker / "out.jsonl")


def test_a_new_state_dir_never_adopts_an_existing_results_file(out, ckpt, tmp_path):
    """A fresh state dir with a non-empty results file already there refuses, and says how to proceed."""
    out.write_bytes(encode(line_for("old")))
    with pytest.raises(StateError, match="was not written by this run"):
        check_identity(ckpt, out=out, manifest=str(tmp_path / "m.jsonl"), append=False, state_dir=tmp_path)
    assert ckpt.get_meta("out") is None


def test_a_different_manifest_is_refused_unless_appended(out, ckpt, tmp_path):
    """Rerunning a state dir with another manifest is refused; --append adds it to the run's manifests."""
    first, second = str(tmp_path / "day1.jsonl"), str(tmp_path / "day2.jsonl")
    check_identity(ckpt, out=out, manifest=first, append=False, state_dir=tmp_path)
    check_identity(ckpt, out=out, manifest=first, append=False, state_dir=tmp_path)  # a resume
    with pytest.raises(UsageError, match="--append"):
        check_identity(ckpt, out=out, manifest=second, append=False, state_dir=tmp_path)
    check_identity(ckpt, out=out, manifest=second, append=True, state_dir=tmp_path)
    assert ckpt.manifests() == [first, second]  # the last is the current one


def test_a_state_dir_that_names_no_manifest_is_refused_clearly(out, ckpt, tmp_path):
    """A state dir bound to a results file but naming no manifest (written by hand or by a tool)
    is refused with a UsageError that says what to do, not an IndexError."""
    ckpt.set_meta("out", str(out.resolve()))
    with pytest.raises(UsageError, match="names no manifest"):
        check_identity(ckpt, out=out, manifest=str(tmp_path / "m.jsonl"), append=False, state_dir=tmp_path)


def test_another_results_file_is_refused(out, ckpt, tmp_path):
    """A state dir bound to one results file refuses another --out."""
    check_identity(ckpt, out=out, manifest="m.jsonl", append=False, state_dir=tmp_path)
    with pytest.raises(UsageError, match="belongs to a run writing"):
        check_identity(ckpt, out=tmp_path / "other.jsonl", manifest="m.jsonl", append=False, state_dir=tmp_path)


# ---- where lines are: offsets kept, moved by a rewrite, indexed for old state dirs ------------


def _lines_at(out: Path, ckpt) -> dict[str, str]:
    """{item id: the id of the line found at its recorded offset}."""
    found = {}
    with open(out, "rb") as f:
        for k, at in ckpt.done_lines():
            f.seek(at)
            found[k.split("\x1f")[0]] = json.loads(f.readline())["id"]
    return found


def test_drop_lines_moves_the_offsets_of_the_lines_after(out, ckpt):
    """After --retry-failed's rewrite, every kept line's recorded offset points at that line."""
    write_done(out, ckpt, ["a", "b", "c", "d"])
    assert drop_lines(out, {key("b")}, ckpt) == 1
    found = _lines_at(out, ckpt)
    assert {i: found[i] for i in ("a", "c", "d")} == {"a": "a", "c": "c", "d": "d"}


def test_a_state_dir_from_before_analyses_is_upgraded_and_indexed(tmp_path, out):
    """Rows keyed by the item id alone become (id, capability), reservations follow them, and
    the next run's preparation notes where each line is: nothing runs twice."""
    import sqlite3

    state = tmp_path / "old-state"
    state.mkdir()
    conn = sqlite3.connect(state / "checkpoint.sqlite3")
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE jobs (id TEXT PRIMARY KEY, capability TEXT NOT NULL, service_id TEXT NOT NULL,
            state TEXT NOT NULL, task_id TEXT, submitted_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
            resubmits INTEGER NOT NULL DEFAULT 0, status TEXT, error_code TEXT, usage TEXT, elapsed REAL,
            finished_at REAL);
        CREATE TABLE spend (id TEXT PRIMARY KEY, reserved REAL NOT NULL DEFAULT 0, settled REAL NOT NULL DEFAULT 0);
    """)
    old_lines = []
    for item_id in ("a", "b"):
        record = json.loads(line_for(item_id).to_json())
        del record["analysis"]  # lines from before analyses had none
        old_lines.append(json.dumps(record).encode() + b"\n")
    out.write_bytes(b"".join(old_lines))
    conn.executemany("INSERT INTO jobs (id, capability, service_id, state, status) VALUES (?, ?, ?, 'done', 'SUCCESS')",
                     [("a", CAP, SVC), ("b", CAP, SVC)])
    conn.execute("INSERT INTO jobs (id, capability, service_id, state, task_id) VALUES ('c', ?, ?, 'submitted', 't-c')",
                 (CAP, SVC))
    conn.execute("INSERT INTO spend (id, reserved) VALUES ('c', 0.5)")
    conn.execute("INSERT INTO meta VALUES ('sink_offset', ?)", (str(out.stat().st_size),))
    conn.commit()
    conn.close()

    from pipeline.state.checkpoint import Checkpoint
    ckpt = Checkpoint.open(state)
    try:
        state_now = resume_module.prepare(ckpt, out=out, retry_failed=False)
        assert state_now.done == 2 and ckpt.done_line(key("a"))[0] and ckpt.done_line(key("b"))[0]
        assert set(state_now.pending) == {key("c")}
        assert state_now.pending[key("c")].task_id == "t-c"  # polled, not submitted again
        assert _lines_at(out, ckpt) == {"a": "a", "b": "b"}
        assert ckpt.reserve(key("c"), 0.5, 0.5)  # its own reservation, not a second one
    finally:
        ckpt.close()


async def test_a_state_dir_with_manifests_in_meta_keys_upgrades_and_nothing_runs_twice(tmp_path):
    """A run left by the version that kept its manifests as meta keys goes on under this one: the
    first run upgrades its state dir, knows its manifest (a resume, not a refusal), lets another
    join with --append without submitting the items the two share again, and still counts the
    first manifest's rejected line; the same command once more submits nothing."""
    from support import assert_exactly_once, items, read_results, write_manifest

    from pipeline.config.load import Config
    from pipeline.core.exit_codes import ExitCode
    from pipeline.core.results import RunFiles
    from pipeline.emulator import EmulatorSettings, start_emulator
    from pipeline.engine.runner import RunRequest, run
    from pipeline.state.checkpoint import Checkpoint

    api_key = "upgrade-test-key"
    pool = items(8)
    first = write_manifest(tmp_path / "day1.jsonl", [*pool[:4], "{not json"])
    second = write_manifest(tmp_path / "day2.jsonl", pool[2:8])  # 2 shared with day1, 4 new
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    durations = {c: (0.2, 0.5) for c in ("image-analyze", "video-segmentation", "video-snapshot",
                                          "video-summarization", "audio-asr")}
    async with start_emulator(EmulatorSettings(api_key=api_key, seed=7, time_scale=10.0,
                                               durations=durations)) as emu:
        cfg = Config(endpoint=emu.url, time_scale=10.0, qps_headroom=0.9)

        async def session(manifest, *, append=False):
            before = sum(emu.counters()["submissions"].values())
            result = await run(RunRequest(manifest=str(manifest), files=files, api_key=api_key, config=cfg,
                                          append=append))
            return result, sum(emu.counters()["submissions"].values()) - before

        done, sent = await session(first)
        assert (done.exit_code, sent) == (ExitCode.PARTIAL, 4)  # the rejected line makes it partial
        legacy = to_previous_layout(files.state_dir)
        assert (legacy["manifests"], legacy[f"rejected:{first}"], legacy[f"items:{first}"]) == (str(first), "1", "4")

        resumed, sent = await session(first)  # the same command: a resume of a run it knows
        assert (resumed.exit_code, sent, resumed.summary["rejected_lines"]) == (ExitCode.PARTIAL, 0, 1)
        assert "manifests" in tables_of(files.state_dir)
        assert not {k for k in meta_of(files.state_dir) if k.startswith(("manifest", "rejected:", "items:"))}

        to_previous_layout(files.state_dir)  # and once more, to append to a run of the old layout
        appended, sent = await session(second, append=True)
        assert (appended.exit_code, sent) == (ExitCode.PARTIAL, 4)  # only the 4 new items
        assert appended.summary["rejected_lines"] == 1  # day1's, counted still
        again, sent = await session(second)
        assert sent == 0 and again.summary["succeeded"] == 8
        assert emu.counters()["duplicate_submissions"] == 0
    assert_exactly_once(read_results(files.results), [item["id"] for item in pool])
    ckpt = Checkpoint.open(files.state_dir, read_only=True)
    try:
        assert (ckpt.manifests(), ckpt.item_count(), ckpt.rejected_lines()) == ([str(first), str(second)], 8, 1)
    finally:
        ckpt.close()
