"""Manifest reading: per-line validation, the three formats, ids, stdin, streaming and memory."""

from __future__ import annotations

import dataclasses
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import ManifestError
from pipeline.core.job import Job, job_key
from pipeline.manifest.reader import Rejected, Skipped, derive_id, read_manifest

DATA = Path(__file__).parent / "data" / "manifests"
URL = "https://example.com/a.jpg"
VIDEO = "https://example.com/v.mp4"
SKIP = "skip"  # a blank or comment line: produces nothing


def line(**item: Any) -> str:
    return json.dumps(item)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A manifest directory with a small image, a sparse 9 MB video and a sub-directory."""
    (tmp_path / "small.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with open(tmp_path / "big.mp4", "wb") as f:
        f.truncate(9 * 1024 * 1024)  # sparse: no 9 MB actually written
    (tmp_path / "clip").write_bytes(b"\x00\x00\x00\x18ftypmp42")  # no extension: file_type says mp4
    (tmp_path / "folder.png").mkdir()
    return tmp_path


# Each entry: (manifest line, expected) where expected is None for a valid item, SKIP for a
# line that yields nothing, or a substring of the rejection reason.
CORPUS: list[tuple[str | bytes, str | None]] = [
    (line(id="ok-1", capability="image_analyze", url=URL), None),
    ("", SKIP),
    ("# a comment line", SKIP),
    ("   ", SKIP),
    ('{"capability": "ocr", "url": ', "malformed JSON"),
    ("[", "one complete object per line"),
    ("[1, 2]", "item must be an object"),
    ('"str"', "item must be an object"),
    ("42", "item must be an object"),
    ("null", "item must be an object"),
    (line(capability="foo", url=URL), "unknown capability 'foo' (known: image_analyze"),
    (line(url=URL), "missing capability"),
    (line(capability=7, url=URL), "unknown capability 7"),
    (line(id="ok-2", capability="Detect Objects in Image", path="small.png"), None),
    (line(capability="ocr"), "no source: give exactly one of url, oss, path, content"),
    (line(capability="ocr", url=URL, path="small.png"), "two sources (url, path): give exactly one"),
    (line(capability="video_snapshot", url=VIDEO, oss="oss://b/k", content="AAAA"),
     "three sources (url, oss, content)"),
    (line(capability="video_segmentation", path="small.png", output="oss://b/o/"),
     "video_segmentation does not accept a local path: upload it to OSS and use oss, or give a url"),
    (line(capability="Create Video Summary", content="AAAA", output="oss://b/o/"),
     "video_summarization does not accept inline content: upload it to OSS and use oss"),
    (line(capability="object_detection", oss="oss://b/a.png"),
     "object_detection does not accept an oss source: give one of url, path, content"),
    (line(capability="ocr", path="missing.png"), "no such file"),
    (line(capability="ocr", path="folder.png"), "is not a regular file"),
    (line(capability="video_snapshot", path="big.mp4"), "9.0 MB, too large to send inline"),
    (line(capability="video_snapshot", path="big.mp4"), "upload it to OSS and use oss, or give a url"),
    (line(capability="ocr", url="ftp://example.com/a.jpg"), "url must start with http:// or https://"),
    (line(capability="ocr", url="example.com/a.jpg"), "url must start with http:// or https://"),
    (line(capability="ocr", url=""), "url must be a non-empty string"),
    (line(capability="ocr", url=5), "url must be a non-empty string"),
    (line(capability="audio_asr", oss="s3://b/a.wav"), "oss must be an OSS object path like oss://bucket/key"),
    (line(capability="audio_asr", content="not base64!", file_name="a.wav"), "content must be standard base64"),
    (line(capability="audio_asr", content="data:audio/wav;base64,AAAA"), "no 'data:' prefix"),
    (line(capability="video_snapshot", url=VIDEO, parameters={"interval": "5"}),
     "parameters.interval must be an integer, got a string '5'"),
    (line(capability="video_snapshot", url=VIDEO, parameters={"interval": True}),
     "parameters.interval must be an integer, got a boolean"),
    (line(capability="video_snapshot", url=VIDEO, parameters={"format": "gif"}),
     "parameters.format must be one of jpg, png"),
    (line(capability="video_summarization", url=VIDEO, output="oss://b/o/",
          parameters={"generate_tags": "yes"}), "parameters.generate_tags must be true or false"),
    (line(capability="video_summarization", url=VIDEO, output="oss://b/o/",
          parameters={"rewrite_transcript": 1}), "parameters.rewrite_transcript must be true or false"),
    (line(capability="video_snapshot", url=VIDEO, parameters=[1]), "parameters must be an object"),
    (line(capability="object_detection", url=URL, options="fast"), "options must be an object"),
    (line(capability="ocr", url=URL, service_id="image-analyze-001"),
     "service_id must be 'ops-' followed by letters"),
    (line(capability="ocr", url=URL, service_id=12), "service_id must be 'ops-' followed by letters"),
    (line(capability="ocr", url=URL, service_id="ops-../../x"), "(no '..'), at most 96 characters, got 'ops-../../x'"),
    (line(capability="image_analyze", url=URL, service_id="ops-audio-asr-001"),
     "ops-audio-asr-001 belongs to audio_asr, not image_analyze"),
    (line(id="ok-3", capability="ocr", url=URL, service_id="ops-image-analyze-vlm-001"), None),
    (line(id="ok-4", capability="ocr", url=URL, service_id="ops-image-analyze-custom-007"), None),
    (line(capability="video_segmentation", oss="oss://b/v.mp4"),
     'output.oss is required for video_segmentation: give output: {"oss": "oss://bucket/prefix/"}'),
    (line(capability="video_summarization", url=VIDEO), "output.oss is required for video_summarization"),
    (line(capability="video_segmentation", url=VIDEO, output={"type": "base64"}),
     "output.oss is required for video_segmentation"),
    (line(capability="audio_asr", url=VIDEO, output={"type": "oss"}),
     "output.oss is required when output.type is oss"),
    (line(capability="audio_asr", url=VIDEO, output="s3://b/o/"), "output.oss must be an OSS location"),
    (line(capability="audio_asr", url=VIDEO, output=["oss://b/o/"]), "output must be an object"),
    (line(capability="ocr", url=URL, output="oss://b/o/"), "output is not used by image_analyze"),
    (line(capability="ocr", urll=URL), "unknown field 'urll' (did you mean 'url'?)"),
    (line(capability="ocr", url=URL, colour="red"), "unknown field 'colour'"),
    (line(capability="ocr", url=URL, file_type="gif"), "file_type 'gif' is not accepted by image_analyze"),
    (line(capability="ocr", content="AAAA"), "give file_name (e.g. \"scan.png\") or file_type"),
    (line(capability="ocr", url="https://h/anim.gif"), "url 'anim.gif' is a .gif file"),
    (line(capability="video_snapshot", url=VIDEO, parameters={"interval": -5}),
     "parameters.interval must be at least 1, got -5"),
    (line(capability="video_snapshot", url=VIDEO, output={"type": "bogus"}), "output.type must be one of oss, base64"),
    ('{"id": "a", "capability": "ocr", "url": "https://h/a.png", "id": "b"}', "key 'id' appears twice"),
    (line(id=17, capability="ocr", url=URL), "got a number (read as 17): quote the id as it is written"),
    (line(capability="video_snapshot", content="AAAA", file_name="notes.txt"),
     "file_name 'notes.txt' is a .txt file, which video_snapshot does not accept"),
    (line(capability="video_summarization", url=VIDEO, output="oss://b/o/", chunks={"a": 1}),
     "chunks must be a list"),
    (line(capability="video_summarization", url=VIDEO, output="oss://b/o/", chunks=[1]),
     "chunks[0] must be an object"),
    (line(id="", capability="ocr", url=URL), "id must be a non-empty string"),
    (line(id=True, capability="ocr", url=URL), "id must be a non-empty string, got a boolean"),
    (line(id=["a"], capability="ocr", url=URL), "id must be a non-empty string, got an array"),
    ('{"capability": "video_snapshot", "url": "https://h/v.mp4", "meta": {"x": NaN}}',
     "meta must be plain JSON data"),
    (b'{"id": "bad-utf8", "capability": "ocr", "url": "https://h/\xff.jpg"}', "not valid UTF-8"),
    ('{"capability": "ocr", "url": "https://h/a.png", "meta": "\\ud800"}', "lone UTF-16 surrogate"),
    (line(id="ok-emoji", capability="ocr", url="https://h/\U0001F600.png"), None),
    (line(id="dup-1", capability="ocr", url=URL), None),
    (line(id="dup-1", capability="audio_asr", url=VIDEO),
     "duplicate id 'dup-1': ids must be unique within a manifest"),
    (line(capability="ocr", url="https://example.com/same.jpg"), None),
    (line(capability="ocr", url="https://example.com/same.jpg"), "this item has no id and repeats"),
    (line(id="ok-5", capability="Segment Video", oss="oss://media/my clip.mp4",
          output={"oss": "oss://media/out/"}), None),
    (line(id="ok-6", capability="Transcribe Audio/Video", content="AAAA", file_name="a.wav",
          meta={"any": ["user", "data"]}), None),
    (line(id="17", capability="extract video keyframes", path="clip", file_type="mp4",
          parameters={"interval": 3, "format": "jpg", "undocumented": "kept"}), None),
]


def write_corpus(directory: Path) -> Path:
    manifest = directory / "corpus.jsonl"
    with open(manifest, "wb") as f:
        for text, _ in CORPUS:
            f.write((text if isinstance(text, bytes) else text.encode()) + b"\n")
    return manifest


def test_corpus_every_line_is_a_job_or_a_reason_with_its_line_number(media: Path) -> None:
    """Each bad line is rejected with its own line number and a reason naming the fix; valid
    lines in between come out as Jobs in order; blank and comment lines yield nothing."""
    results = list(read_manifest(write_corpus(media)))
    expected = [(number, want) for number, (_, want) in enumerate(CORPUS, start=1) if want != SKIP]
    assert len(results) == len(expected)
    for result, (number, want) in zip(results, expected, strict=True):
        assert result.line == number, (number, result)
        if want is None:
            assert isinstance(result, Job), (number, result)
        else:
            assert isinstance(result, Rejected), (number, result)
            assert want in result.reason, (number, result.reason)


def test_corpus_valid_jobs_are_fully_built(media: Path) -> None:
    """Valid items become Jobs with canonical names, default or given service ids, absolute paths
    and ids exactly as written."""
    jobs = {r.id: r for r in read_manifest(write_corpus(media)) if isinstance(r, Job)}
    assert jobs["ok-2"].capability == "object_detection"
    assert jobs["ok-2"].service_id == "ops-object-detect-001"
    assert jobs["ok-2"].source_kind == "path"
    assert jobs["ok-2"].source == str(media / "small.png")
    assert jobs["ok-3"].service_id == "ops-image-analyze-vlm-001"
    assert jobs["ok-5"].output == {"oss": "oss://media/out/"}
    assert jobs["ok-6"].meta == {"any": ["user", "data"]}
    assert jobs["17"].capability == "video_snapshot"
    assert jobs["17"].parameters == {"interval": 3, "format": "jpg", "undocumented": "kept"}


def test_rejected_carries_a_valid_given_id_and_serialises(media: Path) -> None:
    """A rejected item keeps its own id when it had a usable one, and to_dict gives line, id, reason."""
    rejected = [r for r in read_manifest(write_corpus(media)) if isinstance(r, Rejected)]
    dup = next(r for r in rejected if "duplicate" in r.reason and r.id == "dup-1")
    assert dup.to_dict() == {"line": dup.line, "id": "dup-1", "reason": dup.reason}
    assert next(r for r in rejected if "UTF-8" in r.reason).id is None


def test_base_dir_overrides_the_manifest_directory(tmp_path: Path, media: Path) -> None:
    """Relative paths resolve against base_dir when given, not against the manifest's directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = elsewhere / "m.jsonl"
    manifest.write_text(line(capability="ocr", path="small.png") + "\n")
    assert isinstance(next(read_manifest(manifest)), Rejected)
    job = next(read_manifest(manifest, base_dir=media))
    assert isinstance(job, Job) and job.source == str(media / "small.png")


# --------------------------------------------------------------------------- formats


EXPECTED_LINES = {
    "items.jsonl": [2, 3, 5, 6, 7, 8, 9],
    "items.csv": [2, 3, 4, 5, 6, 7, 12],
    "items.yaml": [2, 5, 8, 14, 18, 23, 31],
    "items_multidoc.yaml": [2, 6, 10, 16, 21, 26, 34],
}


def read_jobs(name: str) -> list[Job]:
    results = list(read_manifest(DATA / name))
    assert all(isinstance(r, Job) for r in results), results
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("name", list(EXPECTED_LINES))
def test_formats_report_each_items_first_line(name: str) -> None:
    """Each format reports the line where each item starts (CSV: the record's first physical line)."""
    assert [job.line for job in read_jobs(name)] == EXPECTED_LINES[name]


@pytest.mark.parametrize("name", ["items.csv", "items.yaml", "items_multidoc.yaml"])
def test_same_items_in_every_format_give_the_same_jobs_and_bodies(name: str) -> None:
    """CSV, YAML and multi-document YAML give the same Jobs, ids and request bodies as JSON Lines."""
    reference = read_jobs("items.jsonl")
    other = read_jobs(name)
    assert [dataclasses.replace(j, line=0) for j in other] == \
        [dataclasses.replace(j, line=0) for j in reference]
    for a, b in zip(reference, other, strict=True):
        b64 = "AAAA" if a.source_kind == "path" else None
        assert CAPABILITIES[a.capability].build_body(a, b64) == CAPABILITIES[b.capability].build_body(b, b64)
    derived = reference[1]
    assert derived.id.startswith("item-") and derived.source == str(DATA / "media" / "tiny.png")


def test_stdin_dash_reads_json_lines_relative_to_cwd(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads JSON Lines from stdin, skips blanks, resolves paths against the working directory."""
    monkeypatch.chdir(media)
    text = "\n".join([line(id="s1", capability="ocr", path="small.png"), "",
                      line(id="s2", capability="audio_asr", url=VIDEO), "{oops"]) + "\n"
    results = list(read_manifest("-", stdin=io.StringIO(text)))
    assert [(r.line, r.id) for r in results] == [(1, "s1"), (3, "s2"), (4, None)]
    assert results[0].source == str(media / "small.png")  # type: ignore[union-attr]
    assert isinstance(results[2], Rejected)


def test_stdin_bad_utf8_rejects_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real byte stream (like sys.stdin), bad UTF-8 rejects its line and the next line is read."""
    raw = b'{"capability": "ocr", "url": "https://h/\xff"}\n' + line(capability="ocr", url=URL).encode() + b"\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    results = list(read_manifest("-"))
    assert isinstance(results[0], Rejected) and "UTF-8" in results[0].reason
    assert isinstance(results[1], Job) and results[1].line == 2
    text_only = io.StringIO(raw.decode("utf-8", "surrogateescape"))  # no .buffer underneath
    results = list(read_manifest("-", stdin=text_only))
    assert isinstance(results[0], Rejected) and "UTF-8" in results[0].reason
    assert isinstance(results[1], Job) and results[1].line == 2


@pytest.mark.parametrize("name", ["m.tsv", "m.xlsx", "manifest"])
def test_unsupported_extension_is_a_manifest_error(tmp_path: Path, name: str) -> None:
    """An unknown extension raises ManifestError at once, listing the supported ones."""
    (tmp_path / name).write_text("{}\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / name)
    assert all(ext in str(info.value) for ext in (".jsonl", ".csv", ".yaml", ".txt"))


def test_missing_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    """A manifest that does not exist raises ManifestError naming the file, before any reading."""
    with pytest.raises(ManifestError, match="does not exist") as info:
        read_manifest(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


# --------------------------------------------------------------------------- streaming


N_BIG = 200_000


def big_line(i: int) -> str:
    return line(id=f"item-{i:06d}", capability="object_detection", url=f"https://example.com/img/{i}.jpg")


def test_large_manifest_is_streamed_not_loaded(tmp_path: Path) -> None:
    """The first item of a 200,000-line manifest arrives without reading the file into memory,
    and the whole file then streams through as Jobs."""
    manifest = tmp_path / "big.jsonl"
    with open(manifest, "w") as f:
        f.writelines(big_line(i) + "\n" for i in range(N_BIG))
    assert manifest.stat().st_size > 15 * 1024 * 1024
    stream = read_manifest(manifest)
    tracemalloc.start()
    try:
        first = next(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(first, Job) and first.id == "item-000000"
    assert peak < 1024 * 1024, peak
    count = 1 + sum(1 for r in stream if isinstance(r, Job))
    assert count == N_BIG


class CountingLines:
    """A file-like stdin backed by a generator; counts the lines it has handed out."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.total):
            self.pulled += 1
            yield big_line(i) + "\n"


def test_reader_pulls_lines_only_as_items_are_consumed() -> None:
    """Taking items from the stream pulls only that many lines from the source: the reader is lazy."""
    source = CountingLines(N_BIG)
    stream = read_manifest("-", stdin=source)  # type: ignore[arg-type]
    assert source.pulled == 0
    next(stream)
    assert source.pulled == 1
    for _ in range(9):
        next(stream)
    assert source.pulled == 10


def test_large_yaml_list_is_streamed_item_by_item(tmp_path: Path) -> None:
    """The first item of a big YAML list arrives without composing the whole list."""
    manifest = tmp_path / "big.yaml"
    with open(manifest, "w") as f:
        for i in range(20_000):
            f.write(f"- id: y{i}\n  capability: ocr\n  url: https://example.com/{i}.png\n")
    stream = read_manifest(manifest)
    tracemalloc.start()
    try:
        first = next(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(first, Job) and first.id == "y0"
    assert peak < 512 * 1024, peak
    stream.close()  # type: ignore[attr-defined]


def test_skip_yields_done_items_without_validating_them(tmp_path: Path) -> None:
    """Items the caller says are done come out as Skipped before validation (even if their local
    file is gone), derived ids are matched too, and a repeated done id is still rejected."""
    anonymous = {"capability": "audio_asr", "url": "https://e.com/a.mp3"}
    rows = [
        {"id": "gone", "capability": "image_analyze", "path": "deleted.png"},
        anonymous,
        {"id": "new", "capability": "image_analyze", "url": "https://e.com/n.jpg"},
        {"id": "gone", "capability": "image_analyze", "url": "https://e.com/x.jpg"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = {job_key("gone", "image_analyze"), job_key(derive_id(anonymous), "audio_asr")}
    out = list(read_manifest(manifest, skip=done.__contains__))
    assert [type(o).__name__ for o in out] == ["Skipped", "Skipped", "Job", "Rejected"]
    assert out[0] == Skipped(1, "gone", "image_analyze") and out[1].capability == "audio_asr"
    assert out[3].line == 4 and "duplicate" in out[3].reason
