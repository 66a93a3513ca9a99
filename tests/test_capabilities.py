"""The capability table: name resolution, request bodies (the shapes of docs/protocol.md), result parsing."""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

import pytest
from support import REPO

from pipeline.core.capabilities import (
    CAPABILITIES,
    IMAGE_TYPES,
    MAX_BODY_BYTES,
    VIDEO_TYPES,
    effective_output,
    extension,
    media_type_problem,
    owner_of_service_id,
    resolve,
    valid_service_id,
)
from pipeline.core.job import Job

B64 = "QUJD"  # base64 of b"ABC", standing in for a local file read at submit time


def job(capability: str, kind: str, source: str, **extra: Any) -> Job:
    cap = CAPABILITIES[capability]
    return Job(id="j1", capability=capability, service_id=cap.default_service_id,
               source_kind=kind, source=source, **extra)


# --------------------------------------------------------------------------- resolve

CANONICAL = ["image_analyze", "object_detection", "video_segmentation", "video_snapshot",
             "video_summarization", "audio_asr"]


def test_table_holds_exactly_the_documented_capabilities() -> None:
    """The table has the six capabilities of docs/design.md, keyed by their canonical names."""
    assert sorted(CAPABILITIES) == sorted(CANONICAL)
    assert all(cap.name == name for name, cap in CAPABILITIES.items())


@pytest.mark.parametrize("name", CANONICAL)
def test_resolve_canonical_segment_and_every_alias(name: str) -> None:
    """Each capability resolves from its canonical name, its path segment and every alias."""
    cap = CAPABILITIES[name]
    for spelling in (cap.name, cap.segment, *cap.aliases):
        assert resolve(spelling) is cap, spelling


@pytest.mark.parametrize("spelling, expected", [
    ("Extract Image Content", "image_analyze"),
    ("extract image content", "image_analyze"),
    ("  EXTRACT   IMAGE  CONTENT ", "image_analyze"),
    ("Detect Objects in Image", "object_detection"),
    ("detect-objects-in-image", "object_detection"),
    ("Segment Video", "video_segmentation"),
    ("segment_video", "video_segmentation"),
    ("Extract Video Keyframes", "video_snapshot"),
    ("extract video KEYFRAMES", "video_snapshot"),
    ("Create Video Summary", "video_summarization"),
    ("create-video-summary", "video_summarization"),
    ("Transcribe Audio/Video", "audio_asr"),
    ("transcribe audio / video", "audio_asr"),
    ("TRANSCRIBE_AUDIO_VIDEO", "audio_asr"),
    ("Image-Analyze", "image_analyze"),
    ("VIDEO_SNAPSHOT", "video_snapshot"),
])
def test_resolve_human_aliases_ignore_case_spacing_and_punctuation(spelling: str, expected: str) -> None:
    """The service docs' human names resolve whatever their case, spacing or punctuation."""
    cap = resolve(spelling)
    assert cap is not None and cap.name == expected


@pytest.mark.parametrize("spelling", ["", "foo", "image", "video", "Transcribe Images"])
def test_resolve_unknown_names_to_none(spelling: str) -> None:
    """Names that are not a capability or alias resolve to None instead of guessing."""
    assert resolve(spelling) is None


def test_service_ids_belong_to_one_capability_each() -> None:
    """Every known service id starts with ops- and maps back to the capability that lists it."""
    for cap in CAPABILITIES.values():
        assert cap.known_service_ids[0] == cap.default_service_id
        for sid in cap.known_service_ids:
            assert sid.startswith("ops-")
            assert owner_of_service_id(sid) is cap
    assert owner_of_service_id("ops-unknown-999") is None


#: Modules that may name capabilities: the table itself, the emulator (a model of the service,
#: with its own table) and the demo (its sample config, written as a user would).
NAMING_ALLOWED = {"pipeline/core/capabilities.py", "pipeline/cli/demo.py"}


def test_no_code_outside_the_table_names_a_capability() -> None:
    """Outside the table (the emulator and the demo's config aside) no module of the pipeline holds a
    capability's name or path segment: what a capability does is read from its row."""
    names = {spelling for cap in CAPABILITIES.values() for spelling in (cap.name, cap.segment)}
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        if where in NAMING_ALLOWED or where.startswith("pipeline/emulator/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{where}:{node.lineno} {node.value}")
    assert found == []


def test_body_limit_is_eight_megabytes() -> None:
    """The inline body limit is the protocol's 8 MB."""
    assert MAX_BODY_BYTES == 8 * 1024 * 1024


# --------------------------------------------------------------------------- bodies

BODY_CASES: list[tuple[str, Job, str | None, dict[str, Any]]] = [
    ("image url", job("image_analyze", "url", "https://h/img/a.JPG?sig=1"), None,
     {"document": {"url": "https://h/img/a.JPG?sig=1", "file_name": "a.JPG", "file_type": "jpg"}}),
    ("image content", job("image_analyze", "content", "AAAA", file_name="scan.png"), None,
     {"document": {"content": "AAAA", "file_name": "scan.png", "file_type": "png"}}),
    ("image path", job("image_analyze", "path", "/data/x/scan.tiff"), B64,
     {"document": {"content": B64, "file_name": "scan.tiff", "file_type": "tiff"}}),
    ("image explicit type", job("image_analyze", "url", "https://h/raw", file_type="BMP"), None,
     {"document": {"url": "https://h/raw", "file_name": "raw", "file_type": "bmp"}}),
    ("detect url", job("object_detection", "url", "https://h/a.png"), None,
     {"image": {"url": "https://h/a.png"}}),
    ("detect content+options", job("object_detection", "content", "AAAA", options={"k": 1}), None,
     {"image": {"content": "AAAA"}, "options": {"k": 1}}),
    ("detect path", job("object_detection", "path", "/d/a.png"), B64, {"image": {"content": B64}}),
    ("segment oss", job("video_segmentation", "oss", "oss://b/v/a.mp4",
                        output={"oss": "oss://b/out/"}, parameters={"p": 1}), None,
     {"input": {"oss": "oss://b/v/a.mp4", "file_name": "a.mp4"},
      "output": {"type": "oss", "oss": "oss://b/out/"}, "parameters": {"p": 1}}),
    ("segment url", job("video_segmentation", "url", "https://h/v.mp4", output="oss://b/out/"), None,
     {"input": {"url": "https://h/v.mp4", "file_name": "v.mp4"},
      "output": {"type": "oss", "oss": "oss://b/out/"}}),
    ("snapshot url default output", job("video_snapshot", "url", "https://h/v.mp4",
                                        parameters={"interval": 2, "format": "png"}), None,
     {"input": {"url": "https://h/v.mp4", "file_name": "v.mp4"}, "output": {"type": "base64"},
      "parameters": {"interval": 2, "format": "png"}}),
    ("snapshot oss to oss", job("video_snapshot", "oss", "oss://b/v.mov", output="oss://b/frames/"), None,
     {"input": {"oss": "oss://b/v.mov", "file_name": "v.mov"},
      "output": {"type": "oss", "oss": "oss://b/frames/"}}),
    ("snapshot content", job("video_snapshot", "content", "AAAA", file_name="c.webm"), None,
     {"input": {"content": "AAAA", "file_name": "c.webm"}, "output": {"type": "base64"}}),
    ("snapshot path", job("video_snapshot", "path", "/v/clip.mp4"), B64,
     {"input": {"content": B64, "file_name": "clip.mp4"}, "output": {"type": "base64"}}),
    ("summary url with chunks", job("video_summarization", "url", "https://h/v.mp4",
                                    output={"type": "oss", "oss": "oss://b/s/"},
                                    parameters={"generate_tags": True},
                                    chunks=[{"start_time": 0.0, "end_time": 1.0,
                                             "transcript": "t", "snapshots": []}]), None,
     {"input": {"url": "https://h/v.mp4", "file_name": "v.mp4",
                "chunks": [{"start_time": 0.0, "end_time": 1.0, "transcript": "t", "snapshots": []}]},
      "output": {"type": "oss", "oss": "oss://b/s/"}, "parameters": {"generate_tags": True}}),
    ("summary oss", job("video_summarization", "oss", "oss://b/v.mp4", output="oss://b/s/"), None,
     {"input": {"oss": "oss://b/v.mp4", "file_name": "v.mp4"},
      "output": {"type": "oss", "oss": "oss://b/s/"}}),
    ("asr url default output", job("audio_asr", "url", "https://h/a.mp3"), None,
     {"input": {"url": "https://h/a.mp3", "file_name": "a.mp3"}, "output": {"type": "text"}}),
    ("asr oss to oss", job("audio_asr", "oss", "oss://b/a.wav",
                           output={"type": "oss", "oss": "oss://b/t/"}), None,
     {"input": {"oss": "oss://b/a.wav", "file_name": "a.wav"},
      "output": {"type": "oss", "oss": "oss://b/t/"}}),
    ("asr content", job("audio_asr", "content", "AAAA", file_name="a.wav"), None,
     {"input": {"content": "AAAA", "file_name": "a.wav"}, "output": {"type": "text"}}),
    ("asr path", job("audio_asr", "path", "/a/talk.m4a"), B64,
     {"input": {"content": B64, "file_name": "talk.m4a"}, "output": {"type": "text"}}),
]


@pytest.mark.parametrize("label, the_job, content_b64, expected", BODY_CASES,
                         ids=[case[0] for case in BODY_CASES])
def test_body_builders_produce_protocol_shapes(label: str, the_job: Job, content_b64: str | None,
                                               expected: dict[str, Any]) -> None:
    """Each capability and source kind builds exactly the request body docs/protocol.md describes."""
    cap = CAPABILITIES[the_job.capability]
    assert cap.build_body(the_job, content_b64) == expected


def test_every_capability_and_accepted_source_kind_has_a_body_case() -> None:
    """The body table covers every (capability, source kind) pair the table accepts."""
    covered = {(j.capability, j.source_kind) for _, j, _, _ in BODY_CASES}
    wanted = {(cap.name, kind) for cap in CAPABILITIES.values() for kind in cap.sources}
    assert wanted <= covered


@pytest.mark.parametrize("name", [n for n in CANONICAL if "path" in CAPABILITIES[n].sources])
def test_path_job_without_loaded_content_is_an_error(name: str) -> None:
    """Building a body for a local file whose content was not loaded fails loudly, not silently."""
    with pytest.raises(ValueError, match="not loaded"):
        CAPABILITIES[name].build_body(job(name, "path", "/x/a.mp4"), None)


def test_default_outputs_are_base64_for_snapshot_and_text_for_asr() -> None:
    """Without an output, snapshot frames come back inline and ASR as text; OSS-only ones have none."""
    assert effective_output(CAPABILITIES["video_snapshot"], job("video_snapshot", "url", "https://h/v")) \
        == {"type": "base64"}
    assert effective_output(CAPABILITIES["audio_asr"], job("audio_asr", "url", "https://h/a")) \
        == {"type": "text"}
    for name in ("video_segmentation", "video_summarization"):
        assert effective_output(CAPABILITIES[name], job(name, "url", "https://h/v")) is None
        assert CAPABILITIES[name].requires_output_oss


def test_the_body_takes_its_default_output_from_the_row() -> None:
    """A row's default_output is the one home of that default: the body and effective_output both follow it."""
    cap = dataclasses.replace(CAPABILITIES["audio_asr"], default_output={"type": "oss", "oss": "oss://b/asr/"})
    asr = job("audio_asr", "url", "https://h/a.wav")
    assert cap.build_body(asr, None)["output"] == effective_output(cap, asr) == {"type": "oss", "oss": "oss://b/asr/"}


def test_output_shorthand_and_type_default() -> None:
    """An oss:// string, or an object with only `oss`, both mean output type oss."""
    cap = CAPABILITIES["audio_asr"]
    assert effective_output(cap, job("audio_asr", "url", "https://h/a", output="oss://b/p/")) \
        == {"type": "oss", "oss": "oss://b/p/"}
    assert effective_output(cap, job("audio_asr", "url", "https://h/a", output={"oss": "oss://b/p/"})) \
        == {"type": "oss", "oss": "oss://b/p/"}


@pytest.mark.parametrize("kind, source, extra, name, ftype", [
    ("url", "https://h/a/b.PNG?x=1#f", {}, "b.PNG", "png"),
    ("url", "https://h/a/my%20scan.jpeg", {}, "my scan.jpeg", "jpeg"),
    ("url", "https://example.com/", {}, None, None),
    ("url", "https://example.com", {}, None, None),
    ("url", "https://h/doc.pdf", {}, "doc.pdf", None),
    ("url", "https://h/raw", {"file_name": "given.bmp"}, "given.bmp", "bmp"),
    ("url", "https://h/a.png", {"file_type": "JPG"}, "a.png", "jpg"),
    ("path", "/data/in/photo.jpg", {}, "photo.jpg", "jpg"),
    ("path", "C:\\data\\photo.bmp", {}, "photo.bmp", "bmp"),
    ("content", "AAAA", {}, None, None),
    ("content", "AAAA", {"file_name": "x.tiff"}, "x.tiff", "tiff"),
])
def test_file_name_and_type_derivation(kind: str, source: str, extra: dict[str, Any],
                                       name: str | None, ftype: str | None) -> None:
    """file_name comes from the field or the source's last path segment; file_type from the field
    or an allowed extension, lower-cased; never from a URL's host, query or fragment."""
    body = CAPABILITIES["image_analyze"].build_body(job("image_analyze", kind, source, **extra),
                                                    B64 if kind == "path" else None)
    assert body["document"].get("file_name") == name
    assert body["document"].get("file_type") == ftype
    assert ftype is None or ftype in IMAGE_TYPES


def test_oss_file_name_keeps_literal_characters() -> None:
    """OSS object keys are literal, so '?' and '%' stay part of the derived file name."""
    body = CAPABILITIES["audio_asr"].build_body(job("audio_asr", "oss", "oss://b/dir/a?b%20.wav"), None)
    assert body["input"]["file_name"] == "a?b%20.wav"


# --------------------------------------------------------------------------- checks and results


@pytest.mark.parametrize("service_id, ok", [
    ("ops-image-analyze-ocr-001", True),
    ("ops-custom_model.v2-7", True),
    ("ops-../../x", False),
    ("ops-a..b", False),
    ("ops-x?y=1#z", False),
    ("ops-a/b", False),
    ("ops-a b", False),
    ("ops-", False),
    ("OPS-x", False),
    ("image-analyze-001", False),
    ("ops-\u00e9", False),
])
def test_service_id_is_one_safe_path_segment(service_id: str, ok: bool) -> None:
    """A service id is 'ops-' plus letters, digits, '.', '_' or '-' with no '..', so it can never
    change the request path, add a query or a fragment."""
    assert valid_service_id(service_id) is ok


def test_rule_data_per_capability() -> None:
    """The table says which output types, media types and inline-content naming each capability takes."""
    outputs = {name: cap.output_types for name, cap in CAPABILITIES.items()}
    assert outputs == {"image_analyze": (), "object_detection": (), "video_segmentation": ("oss",),
                       "video_snapshot": ("oss", "base64"), "video_summarization": ("oss",),
                       "audio_asr": ("text", "oss")}
    assert CAPABILITIES["image_analyze"].media_types == IMAGE_TYPES == CAPABILITIES["object_detection"].media_types
    assert CAPABILITIES["video_snapshot"].media_types == VIDEO_TYPES
    assert CAPABILITIES["audio_asr"].media_types == ()
    assert {n for n, c in CAPABILITIES.items() if c.content_needs_file_name} == \
        {"image_analyze", "video_snapshot", "audio_asr"}
    interval = CAPABILITIES["video_snapshot"].parameters["interval"]
    assert interval.types == (int,) and interval.minimum == 1
    for cap in CAPABILITIES.values():
        default = (cap.default_output or {}).get("type")
        assert default is None or default in cap.output_types


@pytest.mark.parametrize("name, expected", [
    ("a.GIF", "gif"), ("x.tar.gz", "gz"), ("noext", None), (".hidden", None), ("a.", None), (None, None),
])
def test_extension_of_a_file_name(name: str | None, expected: str | None) -> None:
    """The extension is the lower-cased text after the last dot; dot-files and bare names have none."""
    assert extension(name) == expected


@pytest.mark.parametrize("capability, kind, source, extra, fragment", [
    ("image_analyze", "url", "https://h/anim.gif?x=1", {}, "url 'anim.gif' is a .gif file"),
    ("object_detection", "url", "https://h/clip.mp4", {}, "url 'clip.mp4' is a .mp4 file"),
    ("object_detection", "path", "/d/movie.MP4", {}, "path 'movie.MP4' is a .mp4 file"),
    ("image_analyze", "content", "AAAA", {"file_name": "a.gif"}, "file_name 'a.gif' is a .gif file"),
    ("object_detection", "url", "https://h/a.png", {"file_type": "gif"}, "file_type 'gif' is not accepted"),
    ("video_snapshot", "url", "https://h/still.jpg", {}, "url 'still.jpg' is a .jpg file"),
    ("image_analyze", "url", "https://h/raw", {}, None),
    ("image_analyze", "url", "https://h/a.JPEG", {}, None),
    ("object_detection", "path", "/d/scan.tiff", {}, None),
    ("audio_asr", "url", "https://h/talk.m4a", {}, None),
])
def test_media_type_rule(capability: str, kind: str, source: str, extra: dict[str, Any],
                         fragment: str | None) -> None:
    """A file name (given or taken from the source) whose extension the capability does not take
    is refused, naming it; no extension, or a capability without media types, is fine."""
    problem = media_type_problem(CAPABILITIES[capability], job(capability, kind, source, **extra))
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


def test_inline_video_needs_a_video_type() -> None:
    """Inline snapshot input must name a video format, by file name or file_type."""
    check = CAPABILITIES["video_snapshot"].check
    assert check is not None
    assert "mp4" in (check(job("video_snapshot", "content", "AAAA", file_name="a.txt")) or "")
    assert check(job("video_snapshot", "content", "AAAA", file_type="MKV")) is None
    assert check(job("video_snapshot", "path", "/v/a.flv")) is None
    assert check(job("video_snapshot", "url", "https://h/noext")) is None


def test_parse_result_async_returns_data_and_sync_returns_result() -> None:
    """Async capabilities yield the status result's data; the synchronous one yields the whole result."""
    status = {"task_id": "t1", "status": "SUCCESS", "data": [{"start": 0.0, "end": 1.0, "text": "hi"}]}
    assert CAPABILITIES["audio_asr"].parse_result(status) == status["data"]
    assert CAPABILITIES["image_analyze"].parse_result({"task_id": "t", "status": "FAILED"}) is None
    detection = {"objects": [{"confidence": "0.9", "location": {"X": 1, "Y": 2, "width": 3, "height": 4}}]}
    parsed = CAPABILITIES["object_detection"].parse_result(detection)
    assert parsed == detection and parsed is not detection
    assert [c.name for c in CAPABILITIES.values() if not c.is_async] == ["object_detection"]
