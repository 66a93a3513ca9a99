"""Several analyses per item: the `analyses` list, names and `after`, the run-wide `--analyses`,
output templates, and a resume's quick path asking for (item, analysis) keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import ManifestError
from pipeline.core.job import Job, job_key
from pipeline.manifest.analyses import validate_record
from pipeline.manifest.reader import Rejected, Skipped, derive_id, read_manifest

IMG = "https://example.com/a.jpg"
VIDEO = "https://example.com/v.mp4"
TEMPLATES = {"video_segmentation": "oss://b/r/{analysis}/{id}/", "video_summarization": "oss://b/s/{capability}/{id}/"}


def jobs(raw: dict[str, Any], **kwargs: Any) -> list[Job]:
    result = validate_record(raw, 7, **kwargs)
    assert not isinstance(result, Rejected), result
    return result


def reason(raw: dict[str, Any], **kwargs: Any) -> str:
    result = validate_record(raw, 7, **kwargs)
    assert isinstance(result, Rejected), result
    assert result.line == 7
    return result.reason


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- the list


def test_list_of_names_gives_one_job_per_analysis_sharing_the_item() -> None:
    """Capability names (aliases too) give one Job each, in order, named by the canonical
    capability, all with the item's id, source, file fields and meta, and distinct keys."""
    out = jobs({"id": "p1", "url": IMG, "file_type": "jpg", "meta": {"k": 1},
                "analyses": ["ocr", "Detect Objects in Image"]})
    assert [(j.analysis, j.capability) for j in out] == [("image_analyze", "image_analyze"),
                                                         ("object_detection", "object_detection")]
    assert {(j.id, j.source_kind, j.source, j.file_type, json.dumps(j.meta), j.line) for j in out} == {
        ("p1", "url", IMG, "jpg", '{"k": 1}', 7)}
    assert [j.key for j in out] == [job_key("p1", "image_analyze"), job_key("p1", "object_detection")]
    assert all(j.after is None for j in out)


def test_object_form_carries_its_own_fields() -> None:
    """An object gives its name, service id, parameters, options and output to its Job only."""
    out = jobs({"id": "i", "url": IMG, "analyses": [
        {"name": "vlm", "capability": "image_analyze", "service_id": "ops-image-analyze-vlm-001",
         "parameters": {"prompt": "describe"}},
        {"capability": "object_detection", "options": {"x": 1}},
        {"name": "faces", "capability": "object_detection", "service_id": "ops-object-detect-face-001"},
    ]})
    vlm, objects, faces = out
    assert (vlm.analysis, vlm.service_id) == ("vlm", "ops-image-analyze-vlm-001")
    assert vlm.parameters == {"prompt": "describe"}
    assert (objects.analysis, objects.options, objects.parameters) == ("object_detection", {"x": 1}, None)
    assert (faces.analysis, faces.service_id, faces.options) == ("faces", "ops-object-detect-face-001", None)
    [frames, asr] = jobs({"id": "v", "url": VIDEO, "analyses": [
        {"name": "frames", "capability": "video_snapshot", "parameters": {"interval": 5}, "output": "oss://b/f/"},
        "asr"]})
    assert (frames.analysis, frames.parameters, frames.output) == ("frames", {"interval": 5}, "oss://b/f/")
    assert (asr.analysis, asr.parameters, asr.output) == ("audio_asr", None, None)


def test_an_item_without_analyses_is_one_job_named_after_its_capability() -> None:
    """The single-capability form is unchanged: one Job, analysis = canonical capability."""
    [job] = jobs({"id": "x", "capability": "ocr", "url": IMG})
    assert (job.analysis, job.capability, job.key) == ("image_analyze", "image_analyze", job_key("x", "image_analyze"))


def test_derived_id_is_the_items_and_shared_by_its_analyses() -> None:
    """Without an id, every analysis gets the one id derived from the item, its analyses aside:
    adding an analysis later keeps the id, so the analyses already done stay done."""
    raw = {"url": IMG, "analyses": ["ocr", "object_detection"]}
    assert {j.id for j in jobs(raw)} == {derive_id(raw)}
    more = {"url": IMG, "analyses": ["ocr", "object_detection", {"name": "vlm", "capability": "ocr"}]}
    assert {j.id for j in jobs(more)} == {derive_id(raw)}
    assert derive_id({**raw, "meta": {"k": 1}}) != derive_id(raw)


# --------------------------------------------------------------------------- names


def test_a_repeated_capability_needs_a_name() -> None:
    """Two entries of one capability without names are refused, suggesting a name (the service id's
    telling word when it has one)."""
    assert reason({"url": IMG, "analyses": ["ocr", "image_analyze"]}) == (
        "analyses[1]: a second image_analyze needs a name (e.g. name: image_analyze_2)")
    assert reason({"url": IMG, "analyses": [
        "ocr", {"capability": "image_analyze", "service_id": "ops-image-analyze-vlm-001"}]}) == (
        "analyses[1]: a second image_analyze needs a name (e.g. name: vlm)")
    out = jobs({"url": IMG, "analyses": ["ocr", {"name": "vlm", "capability": "image_analyze",
                                                 "service_id": "ops-image-analyze-vlm-001"}]})
    assert [(j.analysis, j.service_id) for j in out] == [("image_analyze", "ops-image-analyze-ocr-001"),
                                                         ("vlm", "ops-image-analyze-vlm-001")]


def test_a_name_given_twice_is_refused() -> None:
    """Explicit names must be unique within the item, whatever their capabilities."""
    got = reason({"url": IMG, "analyses": [{"name": "x", "capability": "ocr"},
                                           {"name": "x", "capability": "object_detection"}]})
    assert got == "analyses[1]: name 'x' is already used by analyses[0]: names must be unique within an item"


@pytest.mark.parametrize("name", ["a b", "", "x" * 65, "sum/mary", 5])
def test_a_name_must_be_a_plain_word(name: object) -> None:
    """Names go into keys, result lines and output prefixes: letters, digits, '_', '.', '-' only."""
    got = reason({"url": IMG, "analyses": [{"name": name, "capability": "ocr"}]})
    assert got.startswith("analyses[0]: name must be 1 to 64 letters, digits, '_', '.' or '-', got ")


# --------------------------------------------------------------------------- item-level rules


def test_capability_and_analyses_together_are_refused() -> None:
    got = reason({"id": "z", "capability": "ocr", "url": IMG, "analyses": ["object_detection"]})
    assert "give capability or analyses, not both" in got


@pytest.mark.parametrize(("key", "value"), [("parameters", {"interval": 5}), ("service_id", "ops-video-snapshot-001"),
                                            ("options", {}), ("output", "oss://b/o/"), ("chunks", [])])
def test_per_analysis_fields_on_the_item_are_refused(key: str, value: Any) -> None:
    """service_id, parameters, options, output and chunks are per analysis: the message says where to put them."""
    got = reason({"url": VIDEO, key: value, "analyses": ["video_snapshot"]})
    assert got.startswith(f"{key} belongs inside an analysis when an item has analyses: move it into the analysis")


@pytest.mark.parametrize(("entries", "says"), [
    ([], "analyses must be a non-empty list of capability names or objects like {capability: ..., name: ...}, "
         "got an empty list"),
    ("ocr", "analyses must be a non-empty list"),
    ([5], "analyses[0]: must be a capability name or an object"),
    (["ocr", "teleport"], "analyses[1]: unknown capability 'teleport' (known: image_analyze"),
    ([{"name": "n"}], "analyses[0]: missing capability: give capability (known capabilities: image_analyze"),
    ([{"capability": "ocr", "url": IMG}], "analyses[0]: url belongs to the item, not to one analysis"),
    ([{"capability": "ocr", "servce_id": "x"}], "analyses[0]: unknown field 'servce_id' (did you mean 'service_id'?)"),
    ([{"capability": "ocr", "after": 3}], "analyses[0]: after must be the name of another analysis"),
])
def test_malformed_entries_name_the_entry(entries: Any, says: str) -> None:
    assert says in reason({"url": IMG, "analyses": entries})


def test_an_invalid_analysis_rejects_the_whole_line_with_its_prefix(tmp_path: Path) -> None:
    """Each analysis is checked as a single item would be; the first bad one rejects the line once,
    prefixed with its index and name, and no Job of that line comes out."""
    manifest = write(tmp_path / "m.jsonl", [
        {"id": "ok", "capability": "ocr", "url": IMG},
        {"id": "bad", "url": IMG, "analyses": ["ocr", {"name": "seg", "capability": "video_segmentation",
                                                         "output": "oss://b/o/"}]},
    ])
    out = list(read_manifest(manifest))
    assert [type(o).__name__ for o in out] == ["Job", "Rejected"]
    rejected = out[1]
    assert isinstance(rejected, Rejected) and (rejected.line, rejected.id) == (2, "bad")
    assert rejected.reason.startswith("analyses[1] (seg): url 'a.jpg' is a .jpg file, which video_segmentation "
                                      "does not accept")


def test_missing_output_hints_at_the_config_template() -> None:
    """A segmentation without output and without a template is refused, naming outputs.<capability>."""
    got = reason({"url": VIDEO, "analyses": [{"name": "seg", "capability": "video_segmentation"}]})
    assert got.startswith("analyses[0] (seg): output.oss is required for video_segmentation")
    assert got.endswith("or set outputs.video_segmentation in the config")
    single = reason({"capability": "video_segmentation", "url": VIDEO})
    assert single.endswith("or set outputs.video_segmentation in the config")


# --------------------------------------------------------------------------- after


VIDEO_ITEM = {"id": "v1", "url": VIDEO}


def analyses(*entries: dict[str, Any]) -> dict[str, Any]:
    return {**VIDEO_ITEM, "analyses": list(entries)}


SEG = {"name": "seg", "capability": "video_segmentation", "output": "oss://b/seg/"}
SUMMARY = {"name": "summary", "capability": "video_summarization", "output": "oss://b/sum/", "after": "seg"}


def test_summarization_after_segmentation_needs_no_chunks() -> None:
    """`after` is kept on the Job (and its key); the summarization needs no chunks of its own."""
    seg, summary = jobs(analyses(SEG, SUMMARY))
    assert (seg.after, summary.after, summary.chunks) == (None, "seg", None)
    assert summary.after_key == job_key("v1", "seg") == seg.key


def test_chunks_for_a_summarization_after_a_segmentation_are_refused() -> None:
    got = reason(analyses(SEG, {**SUMMARY, "chunks": [{"text": "x"}]}))
    assert got.startswith("analyses[1] (summary): chunks come from 'seg'")


def test_after_chains_may_be_any_depth() -> None:
    out = jobs(analyses({"name": "a", "capability": "video_snapshot"},
                        {"name": "b", "capability": "video_snapshot", "after": "a"},
                        {"name": "c", "capability": "audio_asr", "after": "b"}))
    assert [(j.analysis, j.after) for j in out] == [("a", None), ("b", "a"), ("c", "b")]


def test_after_an_unknown_name_lists_the_names() -> None:
    got = reason(analyses({"name": "a", "capability": "video_snapshot"}, {"name": "b", "capability": "audio_asr"},
                          {**SUMMARY, "after": "seg"}))
    assert got == "analyses[2] (summary): after 'seg' names no analysis of this item (its other analyses: a, b)"


def test_after_cycles_are_refused() -> None:
    two = reason(analyses({"name": "a", "capability": "video_snapshot", "after": "b"},
                          {"name": "b", "capability": "audio_asr", "after": "a"}))
    assert two == "analyses: after forms a cycle: a -> b -> a"
    three = reason(analyses({"name": "a", "capability": "video_snapshot"},
                            {"name": "b", "capability": "audio_asr", "after": "d"},
                            {"name": "c", "capability": "video_snapshot", "after": "b"},
                            {"name": "d", "capability": "audio_asr", "after": "c"}))
    assert three == "analyses: after forms a cycle: b -> d -> c -> b"


def test_after_itself_is_a_cycle() -> None:
    assert reason(analyses({"name": "a", "capability": "video_snapshot", "after": "a"})) == (
        "analyses: after forms a cycle: a -> a")


# --------------------------------------------------------------------------- run-wide --analyses


def test_run_wide_analyses_apply_to_items_that_name_none(tmp_path: Path) -> None:
    """--analyses gives items without capability or analyses one Job per name (canonical); items
    that name their own are left as they are."""
    manifest = write(tmp_path / "m.jsonl", [
        {"id": "plain", "url": IMG},
        {"id": "own", "capability": "ocr", "url": IMG},
        {"id": "list", "url": IMG, "analyses": ["object_detection"]},
    ])
    out = [j for j in read_manifest(manifest, analyses=("ocr", "object detection")) if isinstance(j, Job)]
    assert [(j.id, j.analysis) for j in out] == [("plain", "image_analyze"), ("plain", "object_detection"),
                                                  ("own", "image_analyze"), ("list", "object_detection")]


def test_without_run_wide_analyses_an_item_needs_a_capability() -> None:
    got = reason({"id": "x", "url": IMG})
    assert got.startswith("missing capability: give capability, analyses, or run with --analyses")


def test_run_wide_analysis_errors_name_the_flag() -> None:
    """A run-wide analysis refused for an item says it came from --analyses; item-level fields
    meant for one capability are refused with --analyses too."""
    got = reason({"id": "x", "url": IMG}, analyses=("image_analyze", "video_segmentation"))
    assert got.startswith("video_segmentation (--analyses): ")
    got = reason({"id": "x", "url": IMG, "parameters": {}}, analyses=("image_analyze",))
    assert got.startswith("parameters is for one capability, and this item gets --analyses")


@pytest.mark.parametrize(("names", "says"), [(("ocr", "teleport"), "unknown capability 'teleport'"),
                                             (("ocr", "image_analyze"), "'image_analyze' is image_analyze again")])
def test_bad_run_wide_analyses_fail_before_reading(tmp_path: Path, names: tuple[str, ...], says: str) -> None:
    """An unknown or repeated --analyses name raises ManifestError (exit 2) at once: before the
    manifest is even opened."""
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "does-not-exist.jsonl", analyses=names)
    assert says in str(info.value) and str(info.value).startswith("--analyses: ")


# --------------------------------------------------------------------------- resume


def test_resume_skips_an_item_only_when_every_analysis_is_done(tmp_path: Path) -> None:
    """skip is asked with (id, analysis) keys: an item whose analyses are all done comes out as one
    Skipped per key without validation (its file may be gone); one with an analysis left is
    validated and yields all its Jobs."""
    (tmp_path / "b.png").write_bytes(b"\x89PNG")
    manifest = write(tmp_path / "m.jsonl", [
        {"id": "a", "path": "gone.png", "analyses": ["ocr", {"name": "faces", "capability": "object_detection"}]},
        {"id": "b", "path": "b.png", "analyses": ["ocr", {"name": "faces", "capability": "object_detection"}]},
        {"id": "c", "url": IMG},
    ])
    done = {job_key("a", "image_analyze"), job_key("a", "faces"), job_key("b", "faces"),
            job_key("c", "image_analyze"), job_key("c", "object_detection")}
    asked: list[str] = []

    def skip(key: str) -> bool:
        asked.append(key)
        return key in done

    out = list(read_manifest(manifest, skip=skip, analyses=("ocr", "object_detection")))
    assert out[:2] == [Skipped(1, "a", "image_analyze", key=job_key("a", "image_analyze"), analysis="image_analyze"),
                       Skipped(1, "a", "object_detection", key=job_key("a", "faces"), analysis="faces")]
    assert [(type(o).__name__, o.id, getattr(o, "analysis", None)) for o in out[2:]] == [
        ("Job", "b", "image_analyze"), ("Job", "b", "faces"),
        ("Skipped", "c", "image_analyze"), ("Skipped", "c", "object_detection")]
    assert "a" not in asked  # items with analyses are asked by key only


def test_skipped_defaults_its_key_from_the_capability() -> None:
    assert Skipped(3, "x", "audio_asr").key == job_key("x", "audio_asr")
    assert Skipped(3, "x", "audio_asr").analysis == "audio_asr"


def test_a_repeated_id_is_rejected_once_per_item_not_per_analysis(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.jsonl", [
        {"id": "d", "url": IMG, "analyses": ["ocr", "object_detection"]},
        {"id": "d", "url": IMG, "analyses": ["ocr"]},
    ])
    out = list(read_manifest(manifest))
    assert [type(o).__name__ for o in out] == ["Job", "Job", "Rejected"]
    assert isinstance(out[2], Rejected) and out[2].line == 2 and "duplicate id 'd'" in out[2].reason


# --------------------------------------------------------------------------- output templates


def test_templates_fill_the_output_of_analyses_that_give_none() -> None:
    """{analysis}, {id} and {capability} are filled per analysis; an analysis's own output wins."""
    seg, summary = jobs(analyses({"name": "seg", "capability": "video_segmentation"},
                                 {"name": "summary", "capability": "video_summarization", "after": "seg"}),
                        outputs=TEMPLATES)
    assert seg.output == {"type": "oss", "oss": "oss://b/r/seg/v1/"}
    assert summary.output == {"type": "oss", "oss": "oss://b/s/video_summarization/v1/"}
    [own] = jobs(analyses(SEG), outputs=TEMPLATES)
    assert own.output == "oss://b/seg/"


def test_templates_fill_single_capability_items_with_derived_ids(tmp_path: Path) -> None:
    """Items of one capability get the template too; a derived id is the one the item has without it."""
    raw = {"capability": "Segment Video", "url": VIDEO}
    [job] = jobs(raw, outputs=TEMPLATES)
    assert job.id == derive_id(raw) and job.output == {"type": "oss", "oss": f"oss://b/r/video_segmentation/{job.id}/"}
    [snap] = jobs({"capability": "video_snapshot", "url": VIDEO}, outputs=TEMPLATES)
    assert snap.output is None  # no template for it: its own default applies
    manifest = write(tmp_path / "m.jsonl", [raw])
    [read] = list(read_manifest(manifest, outputs=TEMPLATES))
    assert read == dataclasses.replace(job, line=1)
