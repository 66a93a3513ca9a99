"""`validate`: exit codes, the same rules as `run`, and the likely and pessimistic cost figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.validate import format_validate, validate
from pipeline.config.load import Config
from pipeline.config.pricing import BOUND_FACTOR, item_cost, item_cost_bound
from pipeline.core.errors import ManifestError
from pipeline.core.exit_codes import ExitCode
from pipeline.manifest.reader import Rejected, read_manifest

OK_ITEM = {"id": "ok", "capability": "image_analyze", "url": "https://h/a.png"}

CONFIG = dataclasses.replace(
    Config(),
    prices={"ops-image-analyze-ocr-001": {"request": 0.001},
            "ops-image-analyze-vlm-001": {"token_count": 0.002},
            "ops-video-summarize-001": {"request": 0.001, "input_token": 0.002, "output_token": 0.004},
            "ops-audio-asr-001": {"duration": 0.01}},
    usage_estimates={"ops-image-analyze-vlm-001": {"token_count": 100},
                     "ops-video-summarize-001": {"input_token": 200, "output_token": 50}},
)


def write(path: Path, rows: list[Any]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_clean_manifest_is_ok(tmp_path: Path) -> None:
    """A manifest whose every line is a valid item exits OK with no problems."""
    code, report = validate(write(tmp_path / "m.jsonl", [OK_ITEM]), CONFIG)
    assert code is ExitCode.OK and report["problems"] == [] and report["valid_items"] == 1


def test_rejected_lines_are_problems_not_usage_errors(tmp_path: Path) -> None:
    """Rejected lines make validate exit 1 (problems found), not 2, each listed with its line."""
    code, report = validate(write(tmp_path / "m.jsonl", [OK_ITEM, "{oops", {"capability": "ocr"}]), CONFIG)
    assert code is ExitCode.PARTIAL and int(code) == 1
    assert [p["line"] for p in report["problems"]] == [2, 3] and report["rejected_lines"] == 2


def test_manifest_without_items_is_a_problem(tmp_path: Path) -> None:
    """A manifest of only comments and blank lines reports 'the manifest has no items' and exits 1."""
    code, report = validate(write(tmp_path / "m.jsonl", ["# nothing here", ""]), CONFIG)
    assert code is ExitCode.PARTIAL
    assert [p["reason"] for p in report["problems"]] == ["the manifest has no items"]
    assert "the manifest has no items" in format_validate(report)


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    """A manifest that does not exist raises ManifestError, which the CLI maps to exit 2."""
    with pytest.raises(ManifestError, match="does not exist"):
        validate(str(tmp_path / "nope.jsonl"), CONFIG)


def test_validate_rejects_exactly_what_run_rejects(tmp_path: Path) -> None:
    """Every item the run's reader refuses (unsafe service id, negative interval, bogus output type,
    a .gif for image extraction, a broken local file link) is a validate problem on the same line."""
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    video = "https://h/v.mp4"
    rows: list[Any] = [
        OK_ITEM,
        {"capability": "ocr", "url": "https://h/a.png", "service_id": "ops-../../x"},
        {"capability": "ocr", "url": "https://h/a.png", "service_id": "ops-x?y=1#z"},
        {"capability": "video_snapshot", "url": video, "parameters": {"interval": -5}},
        {"capability": "video_snapshot", "url": video, "output": {"type": "bogus"}},
        {"capability": "audio_asr", "url": video, "output": {"type": "bogus"}},
        {"capability": "image_analyze", "url": "https://h/anim.gif"},
        {"capability": "object_detection", "url": "https://h/clip.mp4"},
        {"capability": "ocr", "path": "dangling.png"},
        {"id": 17, "capability": "ocr", "url": "https://h/b.png"},
    ]
    manifest = write(tmp_path / "m.jsonl", rows)
    code, report = validate(manifest, CONFIG)
    run_rejects = [r.line for r in read_manifest(manifest) if isinstance(r, Rejected)]
    assert code is ExitCode.PARTIAL
    assert [p["line"] for p in report["problems"]] == run_rejects == list(range(2, len(rows) + 1))


def test_item_cost_and_bound_per_service() -> None:
    """Per request prices are exact in both figures; per-unit prices use the usage guess, times
    BOUND_FACTOR for the bound; an unpriced service costs 0."""
    assert item_cost("ops-image-analyze-ocr-001", CONFIG) == item_cost_bound("ops-image-analyze-ocr-001", CONFIG) \
        == pytest.approx(0.001)
    assert item_cost("ops-image-analyze-vlm-001", CONFIG) == pytest.approx(0.2)
    assert item_cost_bound("ops-image-analyze-vlm-001", CONFIG) == pytest.approx(0.2 * BOUND_FACTOR)
    summary = 200 * 0.002 + 50 * 0.004
    assert item_cost("ops-video-summarize-001", CONFIG) == pytest.approx(0.001 + summary)
    assert item_cost_bound("ops-video-summarize-001", CONFIG) == pytest.approx(0.001 + BOUND_FACTOR * summary)
    assert item_cost_bound("ops-video-segment-001", CONFIG) == 0.0
    assert BOUND_FACTOR > 1


def test_report_gives_likely_cost_bound_and_currency(tmp_path: Path) -> None:
    """The report's estimated_cost is the likely figure and estimated_cost_bound the pessimistic one,
    both in the config's currency; unpriced and unestimated services are named."""
    rows = [OK_ITEM,
            {"capability": "ocr", "url": "https://h/b.png", "service_id": "ops-image-analyze-vlm-001"},
            {"capability": "video_summarization", "oss": "oss://b/v.mp4", "output": "oss://b/s/"},
            {"capability": "video_summarization", "url": "https://h/w.mp4", "output": "oss://b/s/"},
            {"capability": "video_segmentation", "oss": "oss://b/v.mp4", "output": "oss://b/s/"},
            {"capability": "audio_asr", "url": "https://h/talk.mp3"}]
    _, report = validate(write(tmp_path / "m.jsonl", rows), dataclasses.replace(CONFIG, currency="EUR"))
    likely = 0.001 + 0.2 + 2 * (0.001 + 0.6)
    assert report["estimated_cost"] == pytest.approx(likely)
    bound = 0.001 + BOUND_FACTOR * 0.2 + 2 * (0.001 + BOUND_FACTOR * 0.6)
    assert report["estimated_cost_bound"] == pytest.approx(bound)
    assert report["currency"] == "EUR"
    assert report["unpriced_services"] == ["ops-video-segment-001"]
    assert report["usage_without_estimate"] == ["ops-audio-asr-001: duration"]
    text = format_validate(report)
    assert f"about {likely:.4f} EUR" in text and f"at most {report['estimated_cost_bound']:.4f} EUR" in text


def test_yaml_alias_bomb_is_reported_not_expanded(tmp_path: Path) -> None:
    """validate of a small YAML alias bomb ends at once with each aliased item as a problem."""
    lines = ["- {capability: ocr, url: 'https://h/0.png', meta: &a0 [x, x, x, x, x, x, x, x, x]}"]
    lines += [f"- {{capability: ocr, url: 'https://h/{i}.png', meta: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]}}"
              for i in range(1, 10)]
    manifest = tmp_path / "bomb.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    code, report = validate(str(manifest), CONFIG)
    assert code is ExitCode.PARTIAL and report["rejected_lines"] == 10 and report["valid_items"] == 0
    assert all("aliases" in p["reason"] for p in report["problems"])


def test_items_and_analyses_are_counted_apart(tmp_path: Path) -> None:
    """An item with several analyses is one valid item and one analysis each: per capability and
    cost count analyses, and the report (JSON and text) counts them by name."""
    video = "https://h/v.mp4"
    rows = [
        {"id": "a", "url": "https://h/a.png", "analyses": ["ocr", "object_detection"]},
        {"id": "b", "url": "https://h/b.png"},  # gets --analyses
        {"id": "c", "url": "https://h/c.png", "capability": "object_detection"},
        {"id": "v", "url": video, "analyses": [
            {"name": "seg", "capability": "video_segmentation"},
            {"name": "summary", "capability": "video_summarization", "after": "seg"}]},
    ]
    config = dataclasses.replace(CONFIG, outputs={"video_segmentation": "oss://b/{analysis}/{id}/",
                                                  "video_summarization": "oss://b/{analysis}/{id}/"})
    code, report = validate(write(tmp_path / "m.jsonl", rows), config, analyses=("image_analyze", "object_detection"))
    assert code is ExitCode.OK, report["problems"]
    assert (report["valid_items"], report["analyses"]) == (4, 7)
    assert report["by_analysis"] == {"image_analyze": 2, "object_detection": 3, "seg": 1, "summary": 1}
    assert {cap: entry["items"] for cap, entry in report["by_capability"].items()} == {
        "image_analyze": 2, "object_detection": 3, "video_segmentation": 1, "video_summarization": 1}
    assert report["by_service"]["ops-object-detect-001"] == 3
    assert report["estimated_cost"] == pytest.approx(2 * 0.001 + 0.001 + 200 * 0.002 + 50 * 0.004)
    text = format_validate(report)
    assert "4 valid items, 0 rejected lines\n  4 items, 7 analyses (image_analyze 2, object_detection 3, seg 1, " \
           "summary 1)\n" in text


def test_without_analyses_or_templates_validate_reports_what_run_would(tmp_path: Path) -> None:
    """Without --analyses an item naming no capability is a problem; without a template a
    segmentation without output is one, hinting at the config key; a bad --analyses name is a
    usage error before reading."""
    manifest = write(tmp_path / "m.jsonl", [{"url": "https://h/b.png"},
                                            {"capability": "video_segmentation", "url": "https://h/v.mp4"}])
    code, report = validate(manifest, CONFIG)
    assert code is ExitCode.PARTIAL and [p["line"] for p in report["problems"]] == [1, 2]
    assert "run with --analyses" in report["problems"][0]["reason"]
    assert "set outputs.video_segmentation in the config" in report["problems"][1]["reason"]
    with pytest.raises(ManifestError, match="unknown capability 'nope'"):
        validate(manifest, CONFIG, analyses=("nope",))
