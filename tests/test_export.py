"""`export --by-item`: one object per item from a state dir, streamed in key order, refused when unsure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from export_support import OLD_EXPORT, SERVICE, Run, line, three_items

from pipeline.cli import export
from pipeline.cli.main import main
from pipeline.core.job import KEY_SEP
from pipeline.state.checkpoint import Outcome


@pytest.fixture(name="run")
def run_fixture(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    yield r
    r.ckpt.close()


def test_export_groups_each_items_analyses_in_one_object(run: Run, tmp_path: Path) -> None:
    """Three items with 1-3 analyses: one object each, in key order, analyses by name, status from all of them."""
    code, items = three_items(run).export(tmp_path)
    assert code == 0
    assert [i["id"] for i in items] == ["a", "b", "c"]
    assert [i["status"] for i in items] == ["SUCCESS", "FAILED", "SUCCESS"]
    assert [list(i["analyses"]) for i in items] == [["caption", "objects"], ["caption", "objects", "ocr"], ["caption"]]
    assert list(items[0]) == ["id", "status", "meta", "analyses"]
    assert items[1]["meta"] == {"batch": 7, "item": "b"}
    failed = items[1]["analyses"]["objects"]
    assert failed == {"capability": "object_detection", "service_id": "ops-object-detect-001", "status": "FAILED",
                      "task_id": "t-b-objects", "data": None, "usage": None,
                      "error": {"code": "InvalidParameter", "message": "bad image", "http_status": 400},
                      "attempts": 2, "polls": 1, "submitted_at": "2023-11-14T22:13:20.000Z",
                      "finished_at": "2023-11-14T22:13:22.000Z", "elapsed_s": 2.0}
    assert items[0]["analyses"]["caption"]["data"] == {"text": "caption of a", "é": "ü"}
    assert items[2]["analyses"]["caption"]["source_oss"] == "oss://b/c.jpg"
    assert "source_oss" not in items[0]["analyses"]["caption"]
    raw = (tmp_path / "export.jsonl").read_text(encoding="utf-8")
    assert '"é":"ü"' in raw and ", " not in raw  # compact, not ASCII-escaped


def test_ids_that_are_prefixes_of_each_other_stay_separate(run: Run, tmp_path: Path) -> None:
    """"a", "a b" and "ab" share a prefix: still three items, each with its own two analyses."""
    run.write([line(i, a) for a in ("caption", "ocr") for i in ("ab", "a b", "a")])
    code, items = run.export(tmp_path)
    assert code == 0
    assert [(i["id"], list(i["analyses"])) for i in items] == [
        ("a", ["caption", "ocr"]), ("a b", ["caption", "ocr"]), ("ab", ["caption", "ocr"])]
    assert all(i["meta"]["item"] == i["id"] for i in items)


def test_an_id_holding_the_key_separator_is_not_split(run: Run, tmp_path: Path) -> None:
    """An id "p<sep>z" sorts between p's analyses "caption" and "zz": p still comes out once, whole."""
    nested = f"p{KEY_SEP}z"
    run.write([line("p", "caption"), line("p", "zz"), line(nested, "ocr"), line("q", "ocr")])
    code, items = run.export(tmp_path)
    assert code == 0
    assert sorted((i["id"], list(i["analyses"])) for i in items) == [
        ("p", ["caption", "zz"]), (nested, ["ocr"]), ("q", ["ocr"])]


def test_items_are_written_as_they_complete(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streaming: the first item is written before the keys of the third are read (nothing is gathered)."""
    three_items(run)
    consumed: list[str] = []
    seen_at_first_write: list[list[str]] = []
    real = run.ckpt.done_lines

    def spy() -> Iterator[tuple[str, int | None]]:
        for key, at in real():
            consumed.append(key)
            yield key, at

    class Sink_:
        def write(self, data: bytes) -> None:
            if not seen_at_first_write:
                seen_at_first_write.append(list(consumed))

    monkeypatch.setattr(run.ckpt, "done_lines", spy)
    assert export.export_by_item(run.ckpt, run.out, Sink_(), state_dir=run.state_dir) == (3, 6)
    assert [k.split(KEY_SEP)[0] for k in seen_at_first_write[0]] == ["a", "a", "b"]


def test_cli_writes_the_file_and_logs_the_counts(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m pipeline export --by-item --out FILE`: exit 0, the file, and one line saying how much."""
    three_items(run)
    target = tmp_path / "by-item.jsonl"
    target.write_text(OLD_EXPORT)  # an earlier export: the one kind of file an export replaces
    assert main(["export", "--by-item", "--state-dir", str(run.state_dir), "--out", str(target)]) == 0
    assert [json.loads(raw)["id"] for raw in target.read_text().splitlines()] == ["a", "b", "c"]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"exported 3 items (6 analyses) to {target}" in captured.err
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_writes_to_stdout(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --out (or with -), the objects go to stdout and the log line to stderr."""
    three_items(run)
    for argv in (["--out", "-"], []):
        assert main(["export", "--by-item", "--state-dir", str(run.state_dir), *argv]) == 0
        captured = capsys.readouterr()
        items = [json.loads(raw) for raw in captured.out.splitlines()]
        assert [(i["id"], i["status"]) for i in items] == [("a", "SUCCESS"), ("b", "FAILED"), ("c", "SUCCESS")]
        assert "exported 3 items (6 analyses) to stdout" in captured.err


def test_a_run_with_nothing_done_exports_nothing(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that has written no line yet (no results file either): an empty export, exit 0."""
    assert main(["export", "--by-item", "--state-dir", str(run.state_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "exported 0 items (0 analyses)" in captured.err


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 and no traceback; returns stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


def test_missing_results_file_is_a_usage_error(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_items(run)
    run.out.unlink()
    target = tmp_path / "by-item.jsonl"
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir), "--out", str(target)], capsys)
    assert f"results file {run.out.resolve()} of the run in {run.state_dir} is missing" in err
    assert not target.exists() and [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_edited_results_file_is_refused(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lines moved after the run wrote them: an offset finds another key's line; nothing is written."""
    three_items(run)
    lines = run.out.read_bytes().splitlines(keepends=True)
    run.out.write_bytes(b"".join(reversed(lines)))
    target = tmp_path / "by-item.jsonl"
    target.write_text(OLD_EXPORT)
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir), "--out", str(target)], capsys)
    assert "was changed after the run wrote it" in err and "item 'a'" in err and "Restore the file" in err
    assert target.read_text() == OLD_EXPORT  # the old export is left whole


def test_a_results_file_cut_short_is_refused(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    three_items(run)
    run.out.write_bytes(run.out.read_bytes()[:10])
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir)], capsys)
    assert "was changed after the run wrote it" in err


def test_lines_without_offsets_ask_for_one_run(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A done key without an offset (written before offsets existed): run once to index it, exit 2."""
    three_items(run)
    run.ckpt.mark_done([Outcome(f"d{KEY_SEP}ocr", "image_analyze", SERVICE["image_analyze"], "SUCCESS", None, None,
                                None, None, 1)], run.out.stat().st_size)
    target = tmp_path / "by-item.jsonl"
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir), "--out", str(target)], capsys)
    assert "Run `python -m pipeline run` once on it" in err
    assert not target.exists()


def test_an_unindexed_state_dir_is_refused_before_any_output(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    three_items(run)
    run.ckpt.set_meta("needs_line_index", "1")
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir)], capsys)
    assert "from an earlier version" in err


def test_a_dir_without_a_checkpoint_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["export", "--by-item", "--state-dir", str(tmp_path / "nothing")], capsys)
    assert "holds no run" in err


def test_the_export_never_replaces_the_results_file(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    three_items(run)
    before = run.out.read_bytes()
    err = fails(["export", "--by-item", "--state-dir", str(run.state_dir), "--out", str(run.out)], capsys)
    assert "is a run's results file" in err
    assert run.out.read_bytes() == before
