"""The format readers: YAML anchors and aliases, the `items:` wrapper, repeated JSON keys, CSV
comment rows, and bad records that are rejected while reading goes on."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from pipeline.core.job import Job
from pipeline.manifest.formats import Rejected
from pipeline.manifest.reader import derive_id, read_manifest

GOOD = "- {id: good, capability: ocr, url: 'https://h/ok.png'}\n"


def alias_bomb(levels: int = 10) -> str:
    """Each item's meta is nine aliases of the previous one: 9**10 leaves from about 1 KB of text."""
    lines = ["- {id: b0, capability: ocr, url: 'https://h/0.png', meta: &a0 [x, x, x, x, x, x, x, x, x]}"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"- {{id: b{i}, capability: ocr, url: 'https://h/{i}.png', meta: &a{i} [{refs}]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.timing
def test_yaml_alias_bomb_is_rejected_quickly_in_little_memory(tmp_path: Path) -> None:
    """A ~1 KB manifest whose items nest nine aliases deep is rejected item by item, in well under a
    second and a few MB, and the good item after it is still read."""
    manifest = tmp_path / "bomb.yaml"
    manifest.write_text(alias_bomb() + GOOD)
    assert manifest.stat().st_size < 1500
    started = time.monotonic()
    tracemalloc.start()
    try:
        results = list(read_manifest(manifest))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 8 * 1024 * 1024, peak
    assert [type(r).__name__ for r in results] == ["Rejected"] * 10 + ["Job"]
    assert [r.line for r in results] == list(range(1, 12))
    assert "anchor &a0 at line 1" in results[0].reason and "anchor &a1 at line 2" in results[1].reason
    assert all("anchors and aliases" in r.reason for r in results[:10])


def test_yaml_anchor_in_a_nested_value_skips_only_that_item(tmp_path: Path) -> None:
    """An anchor deep inside one item (block style) rejects that item on its first line; the
    reader resynchronises on the next item."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "- id: a\n  capability: ocr\n  url: https://h/a.png\n  meta:\n    deep:\n      list: &x [1, {k: v}]\n"
        "    more: [1, 2]\n"
        "- id: b\n  capability: ocr\n  url: https://h/b.png\n  meta: *x\n"
        "- id: c\n  capability: ocr\n  url: https://h/c.png\n")
    results = list(read_manifest(manifest))
    assert [(r.line, type(r).__name__) for r in results] == [(1, "Rejected"), (8, "Rejected"), (12, "Job")]
    assert "anchor &x at line 6" in results[0].reason and "alias *x at line 11" in results[1].reason


def test_yaml_mapping_with_an_items_list_is_that_list(tmp_path: Path) -> None:
    """A top-level mapping holding an `items:` list is read as the list, streamed item by item."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("items:\n" + GOOD.replace("- ", "  - ") + "  - {capability: ocr, url: 'https://h/2.png'}\n")
    results = list(read_manifest(manifest))
    assert [(r.line, type(r).__name__) for r in results] == [(2, "Job"), (3, "Job")]
    assert results[0].id == "good"


def test_yaml_items_wrapper_with_other_keys_reports_them(tmp_path: Path) -> None:
    """Keys next to `items:` are reported as unused rather than silently ignored; the items still run."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 2\nitems:\n" + GOOD.replace("- ", "  - "))
    results = list(read_manifest(manifest))
    assert isinstance(results[0], Job)
    assert isinstance(results[1], Rejected) and "top-level key(s) version next to items:" in results[1].reason


def test_yaml_single_mapping_document_is_still_one_item(tmp_path: Path) -> None:
    """A document that is one item mapping (no `items:` key) is read as that item, as before."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("id: one\ncapability: ocr\nurl: https://h/a.png\n---\nid: two\ncapability: ocr\nurls: x\n")
    results = list(read_manifest(manifest))
    assert isinstance(results[0], Job) and results[0].id == "one"
    assert isinstance(results[1], Rejected) and "unknown field 'urls'" in results[1].reason


def test_repeated_json_keys_are_rejected_naming_the_key(tmp_path: Path) -> None:
    """A JSON line, or a CSV JSON cell, that names a key twice is rejected naming the key (JSON
    readers disagree on which value wins); the next line is read."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "a", "capability": "ocr", "url": "https://h/a.png", "url": "https://h/b.png"}\n'
        '{"id": "b", "capability": "ocr", "url": "https://h/a.png", "meta": {"k": 1, "k": 2}}\n'
        '{"id": "c", "capability": "ocr", "url": "https://h/a.png"}\n')
    results = list(read_manifest(manifest))
    assert [type(r).__name__ for r in results] == ["Rejected", "Rejected", "Job"]
    assert "key 'url' appears twice" in results[0].reason and "key 'k' appears twice" in results[1].reason
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text('id,capability,url,meta\nd,ocr,https://h/a.png,"{""x"": 1, ""x"": 2}"\n')
    [row] = list(read_manifest(csv_manifest))
    assert isinstance(row, Rejected) and "column 'meta': key 'x' appears twice" in row.reason


def test_csv_comment_rows_are_skipped(tmp_path: Path) -> None:
    """CSV rows whose first cell starts with '#' are comments, before or after the header."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("# a catalog\nid,capability,url\n  # note, with a comma\na,ocr,https://h/a.png\n")
    results = list(read_manifest(manifest))
    assert [(r.line, r.id, type(r).__name__) for r in results] == [(4, "a", "Job")]


def test_csv_bad_records_are_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    """A CSV record with bad JSON, extra cells or bad UTF-8 is rejected on its line; others are read."""
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        b"id,capability,url,parameters,output,meta\n"
        b'a,video_snapshot,https://h/v.mp4,{bad,,\n'
        b"b,video_snapshot,https://h/v.mp4,,,,extra\n"
        b"c,video_snapshot,https://h/\xff.mp4,,,\n"
        b"\n"
        b'd,video_snapshot,https://h/v.mp4,"{""interval"": 2}",oss://b/frames/,just text\n'
    )
    results = list(read_manifest(manifest))
    assert [(r.line, type(r).__name__) for r in results] == \
        [(2, "Rejected"), (3, "Rejected"), (4, "Rejected"), (6, "Job")]
    assert "column 'parameters' is not valid JSON" in results[0].reason
    assert "4 columns" not in results[1].reason and "header has 6 columns" in results[1].reason
    assert "UTF-8" in results[2].reason
    job = results[3]
    assert isinstance(job, Job)
    assert job.parameters == {"interval": 2} and job.output == "oss://b/frames/" and job.meta == "just text"


def test_a_csv_meta_cell_that_starts_like_json_must_be_json(tmp_path: Path) -> None:
    """Plain text in a CSV meta cell stays a string, but `{bad` (JSON gone wrong) is rejected like a
    bad parameters cell, instead of riding along as a string in every result line."""
    manifest = tmp_path / "m.csv"
    manifest.write_text('id,capability,url,meta\na,ocr,https://h/a.png,{bad\nb,ocr,https://h/b.png,[1\n'
                        'c,ocr,https://h/c.png,plain words\n')
    results = list(read_manifest(manifest))
    assert [type(r).__name__ for r in results] == ["Rejected", "Rejected", "Job"]
    assert all("column 'meta' is not valid JSON" in r.reason for r in results[:2] if isinstance(r, Rejected))
    assert isinstance(results[2], Job) and results[2].meta == "plain words"


def test_yaml_bad_items_are_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    """A YAML item that is not a mapping, uses an unsafe tag or holds a lone surrogate is rejected on
    its line, and the rest is read; dates stay text."""
    manifest = tmp_path / "m.yml"
    manifest.write_text(
        "- [1, 2]\n"
        "- capability: ocr\n"
        "  url: https://h/a.png\n"
        "  meta: !!python/object:os.system {}\n"
        "- capability: ocr\n"
        "  url: https://h/b.png\n"
        "  meta: {taken: 2024-05-01}\n"
        '- {capability: ocr, url: "https://h/\\ud800.png"}\n'
    )
    results = list(read_manifest(manifest))
    assert [(r.line, type(r).__name__) for r in results] == \
        [(1, "Rejected"), (2, "Rejected"), (5, "Job"), (8, "Rejected")]
    assert "surrogate" in results[3].reason
    assert "item must be an object" in results[0].reason
    assert "cannot be read" in results[1].reason
    assert results[2].meta == {"taken": "2024-05-01"}  # type: ignore[union-attr]


def test_yaml_syntax_error_is_reported_once_after_the_good_items(tmp_path: Path) -> None:
    """A YAML syntax error becomes one Rejected at the broken item's line, after the items before it."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("- capability: ocr\n  url: https://h/a.png\n- capability: ocr\n  url: \"https://h/b\n")
    results = list(read_manifest(manifest))
    assert isinstance(results[0], Job)
    assert len(results) == 2 and isinstance(results[1], Rejected) and results[1].line == 4
    assert "YAML syntax error" in results[1].reason


# --------------------------------------------------------------------------- plain text


def test_txt_lines_are_urls_oss_objects_or_paths_beside_the_manifest(tmp_path: Path) -> None:
    """Each line of a .txt manifest is one source: http(s) a url, oss:// an oss object, anything
    else a local path relative to the manifest's directory; blank and '#' lines are skipped and
    every item keeps its own line number and an id derived from its source."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"\x89PNG")
    manifest = tmp_path / "photos.txt"
    manifest.write_bytes(b"\xef\xbb\xbf# my photos\n"
                         b"https://h/a.png\n"
                         b"\n"
                         b"   HTTP://h/b.jpg  \n"
                         b"photos/cat.png\n"
                         b"  # indented comment\n"
                         b"oss://bucket/v.mp4\n")
    results = list(read_manifest(manifest, analyses=("image_analyze",)))
    assert [(r.line, type(r).__name__) for r in results] == [(2, "Job"), (4, "Job"), (5, "Job"), (7, "Rejected")]
    a, b, cat, video = results
    assert isinstance(a, Job) and isinstance(b, Job) and isinstance(cat, Job)
    assert [(j.source_kind, j.source) for j in (a, b)] == [("url", "https://h/a.png"), ("url", "HTTP://h/b.jpg")]
    assert (cat.source_kind, cat.source) == ("path", str(tmp_path / "photos" / "cat.png"))
    assert a.id == derive_id({"url": "https://h/a.png"}) and a.analysis == "image_analyze"
    assert isinstance(video, Rejected) and "image_analyze does not accept an oss source" in video.reason


def test_txt_oss_lines_and_several_analyses(tmp_path: Path) -> None:
    """oss:// lines are oss sources; --analyses gives each line one Job per analysis."""
    manifest = tmp_path / "videos.txt"
    manifest.write_text("oss://bucket/a.mp4\noss://bucket/b.mp4\n")
    results = list(read_manifest(manifest, analyses=("video_snapshot", "asr")))
    assert [(r.line, r.source_kind, r.source, r.analysis) for r in results if isinstance(r, Job)] == [
        (1, "oss", "oss://bucket/a.mp4", "video_snapshot"), (1, "oss", "oss://bucket/a.mp4", "audio_asr"),
        (2, "oss", "oss://bucket/b.mp4", "video_snapshot"), (2, "oss", "oss://bucket/b.mp4", "audio_asr")]


def test_txt_bad_lines_are_rejected_on_their_line(tmp_path: Path) -> None:
    """Unsupported schemes, JSON objects, bad UTF-8, missing files and (without --analyses) the
    missing capability are rejected each on its own line; the reader goes on."""
    manifest = tmp_path / "m.txt"
    manifest.write_bytes(b"ftp://h/a.png\n"
                         b'{"url": "https://h/a.png"}\n'
                         b"https://h/\xff.png\n"
                         b"missing.png\n"
                         b"https://h/ok.png\n")
    results = list(read_manifest(manifest, analyses=("ocr",)))
    assert [(r.line, type(r).__name__) for r in results] == [
        (1, "Rejected"), (2, "Rejected"), (3, "Rejected"), (4, "Rejected"), (5, "Job")]
    reasons = [r.reason for r in results if isinstance(r, Rejected)]
    assert reasons[0].startswith("unsupported source 'ftp://': a .txt manifest line is an http(s):// URL")
    assert "for items with fields write a .jsonl manifest" in reasons[1]
    assert "UTF-8" in reasons[2]
    assert "no such file" in reasons[3] and str(tmp_path) in reasons[3]
    without = list(read_manifest(manifest))
    assert without[-1].line == 5 and isinstance(without[-1], Rejected)
    assert without[-1].reason.startswith("missing capability: give capability, analyses, or run with --analyses")


def test_csv_analyses_column_takes_names_or_json(tmp_path: Path) -> None:
    """A CSV `analyses` cell is capability names separated by commas, or a JSON list."""
    manifest = tmp_path / "m.csv"
    manifest.write_text('id,url,analyses\n'
                        'a,https://h/a.png,"ocr, object_detection"\n'
                        'b,https://h/b.png,"[{""name"": ""vlm"", ""capability"": ""ocr""}]"\n')
    results = list(read_manifest(manifest))
    assert [(r.line, r.id, r.analysis) for r in results if isinstance(r, Job)] == [
        (2, "a", "image_analyze"), (2, "a", "object_detection"), (3, "b", "vlm")]
