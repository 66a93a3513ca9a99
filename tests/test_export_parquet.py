"""`export --format parquet`: the current view (one row per done (item, analysis)) and `--by-item`,
read back with DuckDB; written in row groups, whole or not at all, refused where the JSONL export
refuses, and a clear message when pyarrow is missing."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from export_support import OLD_EXPORT, Run, line, three_items
from support import REPO

from pipeline.cli import export_parquet
from pipeline.cli.main import main

T0 = datetime.fromtimestamp(1_700_000_000, timezone.utc)


@pytest.fixture(name="run")
def run_fixture(tmp_path: Path) -> Iterator[Run]:
    """A state dir and results file, its checkpoint left open as a live run's is."""
    r = Run(tmp_path)
    yield r
    r.ckpt.close()


def export(run: Run, target: Path, *extra: str) -> int:
    return main(["export", "--format", "parquet", "--state-dir", str(run.state_dir), "--out", str(target), *extra])


def query(sql: str, target: Path) -> list[tuple[object, ...]]:
    with duckdb.connect() as db:
        return db.execute(sql.replace("FILE", f"read_parquet('{target}')")).fetchall()


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_the_documented_duckdb_snippet_runs_in_the_dev_environment(doc: str, run: Run, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The doc's `import duckdb` Python block runs as written on an export (no pandas needed)."""
    three_items(run)
    assert export(run, tmp_path / "results.parquet") == 0
    blocks = re.findall(r"```python\n(import duckdb.*?)```", (REPO / doc).read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, blocks
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], doc, "exec"), {})  # the documentation's own code, as a reader would run it


def test_duckdb_reads_one_row_per_current_item_and_analysis(run: Run, tmp_path: Path) -> None:
    """The current view: every done (item, analysis) once, in key order, with typed columns."""
    three_items(run)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    rows = query("SELECT id, analysis, capability, status, error_code, error_message, http_status, attempts, polls, "
                 "submitted_at, finished_at, elapsed_s FROM FILE", target)
    assert [(r[0], r[1]) for r in rows] == [("a", "caption"), ("a", "objects"), ("b", "caption"), ("b", "objects"),
                                            ("b", "ocr"), ("c", "caption")]
    failed = rows[3]
    assert failed[3:9] == ("FAILED", "InvalidParameter", "bad image", 400, 2, 1)
    assert rows[0][3:7] == ("SUCCESS", None, None, None)
    assert rows[0][9] == T0 and (rows[0][10] - rows[0][9]).total_seconds() == 2.0 and rows[0][11] == 2.0
    types = dict(query("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM FILE)", target))
    assert list(types) == [c.name for c in export_parquet.COLUMNS]
    assert types["submitted_at"] == "TIMESTAMP WITH TIME ZONE" and types["http_status"] == "INTEGER"
    assert types["data"] == "VARCHAR" and types["elapsed_s"] == "DOUBLE"


def test_usage_data_and_meta_are_json_text_duckdb_can_query(run: Run, tmp_path: Path) -> None:
    """JSON columns keep the line's values exactly (non-ASCII included) and DuckDB's JSON functions read them."""
    three_items(run)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    rows = query("SELECT data, usage, meta, json_extract_string(data, '$.text'), "
                 "CAST(json_extract(meta, '$.batch') AS INTEGER) FROM FILE WHERE id = 'a' AND analysis = 'caption'",
                 target)
    data, usage, meta, text, batch = rows[0]
    assert json.loads(data) == {"text": "caption of a", "é": "ü"} and json.loads(usage) == {"units": 1}
    assert json.loads(meta) == {"batch": 7, "item": "a"} and text == "caption of a" and batch == 7
    assert query("SELECT data, usage FROM FILE WHERE status = 'FAILED'", target) == [(None, None)]


def test_by_item_has_one_row_per_item_with_its_analyses_as_structs(run: Run, tmp_path: Path) -> None:
    """`--by-item`: one row per item, status from all its analyses, analyses a list DuckDB unnests."""
    three_items(run)
    target = tmp_path / "by-item.parquet"
    assert export(run, target, "--by-item") == 0
    assert query("SELECT id, status, len(analyses) FROM FILE", target) == [("a", "SUCCESS", 2), ("b", "FAILED", 3),
                                                                           ("c", "SUCCESS", 1)]
    flat = query("SELECT id, a.analysis, a.status, a.error_code FROM (SELECT id, unnest(analyses) AS a FROM FILE)",
                 target)
    assert ("b", "objects", "FAILED", "InvalidParameter") in flat and len(flat) == 6


def test_a_line_past_the_checkpoint_is_not_exported(run: Run, tmp_path: Path) -> None:
    """What a live run wrote but has not marked done yet is not in the view: only the checkpoint's lines are."""
    three_items(run)
    with open(run.out, "ab") as f:
        f.write((line("z", "caption").to_json() + "\n").encode())
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    assert query("SELECT count(*), count(*) FILTER (WHERE id = 'z') FROM FILE", target) == [(6, 0)]


def test_row_groups_are_written_as_the_lines_stream(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines are written a row group at a time (BATCH_ROWS each), not gathered whole."""
    three_items(run)
    monkeypatch.setattr(export_parquet, "BATCH_ROWS", 4)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    groups = pq.ParquetFile(target).metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [4, 2]


def test_an_earlier_export_is_replaced_whole(run: Run, tmp_path: Path) -> None:
    """Exporting again over an earlier Parquet export replaces it, leaving no temporary file."""
    three_items(run)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    run.write([line("d", "caption")])
    assert export(run, target) == 0
    assert query("SELECT count(*) FROM FILE", target) == [(7,)]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failure_half_way_leaves_the_earlier_export_whole(run: Run, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An edited results file found after a row group was written: exit 2, the old file intact, no temporary left."""
    three_items(run)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 0
    before = target.read_bytes()
    monkeypatch.setattr(export_parquet, "BATCH_ROWS", 2)
    raw = run.out.read_bytes().splitlines(keepends=True)
    run.out.write_bytes(b"".join(raw[:3] + list(reversed(raw[3:]))))  # later lines moved
    assert export(run, target) == 2
    assert "was changed after the run wrote it" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("where", ["directory", "results", "rejects", "in_state_dir", "other_file", "jsonl_export",
                                   "stdout"])
def test_refused_targets_exit_2_and_write_nothing(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  where: str) -> None:
    """A directory, the run's own files, the state dir, a file that is no Parquet export, stdout: exit 2, untouched."""
    three_items(run)
    other = tmp_path / "notes.parquet"
    other.write_bytes(b"PAR1 not ours")
    jsonl = tmp_path / "by-item.jsonl"
    jsonl.write_text(OLD_EXPORT)
    rejects = tmp_path / "results.rejects.jsonl"
    rejects.write_text("")
    target = {"directory": tmp_path, "results": run.out, "rejects": rejects, "other_file": other,
              "in_state_dir": run.state_dir / "x.parquet", "jsonl_export": jsonl, "stdout": "-"}[where]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "checkpoint" not in p.name}
    assert export(run, Path(target) if target != "-" else target) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("--out" in err or "stdout" in err)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "checkpoint" not in p.name}
    assert after == before


def test_without_pyarrow_the_message_names_the_extra(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """pyarrow not installed: exit 2 before anything is written, naming the `parquet` extra."""
    three_items(run)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    target = tmp_path / "results.parquet"
    assert export(run, target) == 2
    err = capsys.readouterr().err
    assert "opensearch-media-pipeline[parquet]" in err and "Traceback" not in err
    assert not target.exists()


def test_changes_are_jsonl_only(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--changes with --format parquet is refused (exit 2, nothing written): its vanished records are not rows."""
    three_items(run)
    target = tmp_path / "delta.parquet"
    assert main(["export", "--changes", "--format", "parquet", "--state-dir", str(run.state_dir),
                 "--out", str(target)]) == 2
    assert "--changes" in capsys.readouterr().err and not target.exists()
