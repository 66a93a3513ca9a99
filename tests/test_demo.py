"""The demo: every sample manifest runs through the in-process emulator as promised."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import demo
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.job import Job, job_key
from pipeline.core.results import RunFiles
from pipeline.manifest.reader import Rejected, read_manifest

#: Fast enough that the four sample runs take a second or two in all.
TIME_SCALE = 200.0
KNOWN_KEY = "demo-test-key-0123456789abcdef"


@dataclass
class DemoRun:
    code: int
    stdout: str
    out_dir: Path


def run_demo(out_dir: Path, *, keep: bool = False) -> DemoRun:
    """Call `demo.main` as the CLI would, with a known API key, capturing stdout."""
    args = argparse.Namespace(out_dir=str(out_dir), time_scale=TIME_SCALE, keep=keep)
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        mp.setattr(secrets, "token_urlsafe", lambda nbytes=None: KNOWN_KEY)
        code = demo.main(args)
    return DemoRun(code, buffer.getvalue(), out_dir)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return run_demo(tmp_path_factory.mktemp("demo") / "demo-output")


def sample_manifests() -> list[Path]:
    manifests = demo.find_manifests(demo.SAMPLES_DIR)
    assert {m.suffix for m in manifests} == {".jsonl", ".csv", ".yaml"}, manifests
    return manifests


def valid_jobs(manifest: Path) -> list[Job]:
    """One Job per (item, analysis), read with the config `outputs` the demo gives that manifest."""
    return [j for j in read_manifest(manifest, outputs=demo.outputs_for(manifest)) if isinstance(j, Job)]


def line_key(line: dict[str, object]) -> str:
    return job_key(str(line["id"]), str(line["analysis"]))


def result_lines(out_dir: Path, manifest: Path) -> list[dict[str, object]]:
    path = out_dir / f"{demo.output_name(manifest)}.results.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_exits_zero_despite_the_deliberate_reject(demo_run: DemoRun) -> None:
    """The demo ends with exit code 0 and calls every manifest's outcome expected."""
    assert demo_run.code == 0, demo_run.stdout
    assert "PROBLEM" not in demo_run.stdout
    for manifest in sample_manifests():
        assert f"=== {manifest.name} " in demo_run.stdout


def test_samples_cover_every_capability() -> None:
    """Between them the sample manifests exercise all six capabilities."""
    used = {job.capability for m in sample_manifests() for job in valid_jobs(m)}
    assert used == set(CAPABILITIES)


def test_every_valid_item_has_exactly_one_success_line(demo_run: DemoRun) -> None:
    """Each (item, analysis) of each sample manifest has exactly one result line, and it is SUCCESS."""
    for manifest in sample_manifests():
        keys = [job.key for job in valid_jobs(manifest)]
        assert keys, manifest
        lines = result_lines(demo_run.out_dir, manifest)
        assert Counter(line_key(line) for line in lines) == Counter(keys), manifest
        assert {line["status"] for line in lines} == {"SUCCESS"}, manifest


ANALYSES = demo.SAMPLES_DIR / "analyses.jsonl"


def test_analyses_sample_has_one_line_per_item_and_analysis(demo_run: DemoRun) -> None:
    """analyses.jsonl: an image with three analyses (one a VLM under its own name), a video with a
    chained pair and keyframes, and one relying on the output template; one line for each."""
    lines = result_lines(demo_run.out_dir, ANALYSES)
    got = Counter((line["id"], line["analysis"], line["capability"], line["service_id"]) for line in lines)
    assert got == Counter({
        ("shopfront-0042", "image_analyze", "image_analyze", "ops-image-analyze-ocr-001"): 1,
        ("shopfront-0042", "describe", "image_analyze", "ops-image-analyze-vlm-001"): 1,
        ("shopfront-0042", "object_detection", "object_detection", "ops-object-detect-001"): 1,
        ("town-hall-2024", "seg", "video_segmentation", "ops-video-segment-001"): 1,
        ("town-hall-2024", "summary", "video_summarization", "ops-video-summarize-001"): 1,
        ("town-hall-2024", "keyframes", "video_snapshot", "ops-video-snapshot-001"): 1,
        ("lecture-07", "video_segmentation", "video_segmentation", "ops-video-segment-001"): 1,
        ("lecture-07", "summary", "video_summarization", "ops-video-summarize-001"): 1,
    })
    assert all(list(line)[:2] == ["id", "analysis"] for line in lines)
    for item_id, analysis in [("shopfront-0042", "describe"), ("town-hall-2024", "summary")]:
        assert any(row.split()[:2] == [item_id, analysis] for row in demo_run.stdout.splitlines()), analysis


def test_chained_summary_succeeds_after_its_segmentation(demo_run: DemoRun) -> None:
    """Each summary `after` a segmentation is SUCCESS, written after its parent's line and submitted
    only once the parent had finished. The emulator answers 400 to a summarization whose chunks
    differ from those its segmentation returned, so SUCCESS also says the chunks were passed on."""
    lines = result_lines(demo_run.out_dir, ANALYSES)
    position = {line_key(line): n for n, line in enumerate(lines)}
    chained = [job for job in valid_jobs(ANALYSES) if job.after is not None]
    assert {(job.id, job.analysis, job.after) for job in chained} == {
        ("town-hall-2024", "summary", "seg"), ("lecture-07", "summary", "video_segmentation")}
    for job in chained:
        assert job.after_key is not None
        child, parent = lines[position[job.key]], lines[position[job.after_key]]
        assert parent["status"] == child["status"] == "SUCCESS"
        assert position[job.key] > position[job.after_key], job.key
        assert str(child["submitted_at"]) >= str(parent["finished_at"]), job.key
        assert isinstance(parent["data"], list) and parent["data"], "the segmentation returned no chunks"
    assert "after seg: " in demo_run.stdout


def test_output_template_fills_the_missing_output(demo_run: DemoRun) -> None:
    """lecture-07 gives no output: the demo's config `outputs` fills it (printed), and without it
    the item would be rejected. The catalogs run without templates."""
    rejected = [r for r in read_manifest(ANALYSES) if isinstance(r, Rejected)]
    assert [r.id for r in rejected] == ["lecture-07"]
    outputs = {job.analysis: job.output for job in valid_jobs(ANALYSES) if job.id == "lecture-07"}
    assert outputs == {
        "video_segmentation": {"type": "oss", "oss": "oss://demo-bucket/results/video_segmentation/lecture-07/"},
        "summary": {"type": "oss", "oss": "oss://demo-bucket/results/summary/lecture-07/"}}
    assert "config outputs: video_segmentation without an output writes to " in demo_run.stdout
    assert all(not demo.outputs_for(m) for m in sample_manifests() if m != ANALYSES)


def test_local_image_result_quotes_its_file_name(demo_run: DemoRun) -> None:
    """A `path` item is sent as base64 and its result names the local file."""
    checked = 0
    for manifest in sample_manifests():
        by_key = {line_key(line): line for line in result_lines(demo_run.out_dir, manifest)}
        for job in valid_jobs(manifest):
            if job.source_kind == "path":
                data = by_key[job.key]["data"]
                assert isinstance(data, dict)
                assert Path(job.source).name in str(data["content"])
                checked += 1
    assert checked >= 1, "no sample manifest has a local-file item"


def test_deliberate_invalid_line_is_reported_with_its_line_number(demo_run: DemoRun) -> None:
    """The deliberately invalid JSONL line is in the rejects file, and in the report, by line number."""
    manifest = demo.SAMPLES_DIR / "catalog.jsonl"
    expected = demo.deliberate_lines(manifest)
    assert len(expected) == 1
    rejects_file = RunFiles.for_results(demo_run.out_dir / f"{demo.output_name(manifest)}.results.jsonl").rejects
    rejects = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rejects] == sorted(expected)
    assert "output.oss" in rejects[0]["reason"]
    assert f"line {min(expected)} (" in demo_run.stdout


def test_summary_json_files_exist_and_match(demo_run: DemoRun) -> None:
    """Each run leaves a summary JSON file whose success count is the manifest's valid (item, analysis) pairs."""
    for manifest in sample_manifests():
        out = demo_run.out_dir / f"{demo.output_name(manifest)}.results.jsonl"
        summary = json.loads(RunFiles.for_results(out).summary.read_text(encoding="utf-8"))
        assert summary["succeeded"] == len(valid_jobs(manifest))
        assert summary["failed"] == 0


def test_api_key_never_printed_or_written(demo_run: DemoRun) -> None:
    """The generated API key appears neither on stdout nor in any file the demo wrote."""
    assert KNOWN_KEY not in demo_run.stdout
    for path in demo_run.out_dir.rglob("*"):
        if path.is_file():
            assert KNOWN_KEY.encode() not in path.read_bytes(), path


def test_unmarked_invalid_line_makes_the_demo_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected line that no comment marks as deliberate is a real failure: exit code 1."""
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "bad.jsonl").write_text(
        '{"id": "ok", "capability": "object_detection", "url": "https://example.com/a.jpg"}\n'
        '{"id": "bad", "capability": "video_segmentation", "oss": "oss://b/v.mp4"}\n')
    monkeypatch.setattr(demo, "SAMPLES_DIR", samples)
    result = run_demo(tmp_path / "out")
    assert result.code == 1
    assert "PROBLEM: line 2 was rejected" in result.stdout


def test_fresh_start_never_deletes_a_directory_the_demo_did_not_make(tmp_path: Path) -> None:
    """Without the demo's marker file, a non-empty --out-dir is refused and left as it was."""
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert demo.prepare_out_dir(tmp_path, keep=False) is not None
    assert precious.read_text() == "keep me"


def test_fresh_start_never_deletes_what_a_user_put_in_a_demos_directory(tmp_path: Path) -> None:
    """A directory an earlier demo made, where the user then put files of their own, is refused and
    left as it was: a fresh start replaces only the demo's own files (it deleted the directory whole)."""
    out = tmp_path / "out"
    assert demo.prepare_out_dir(out, keep=False) is None  # an earlier demo's directory: its marker
    project = out / "myproject" / "src"
    project.mkdir(parents=True)
    (project / "main.py").write_text("code")
    problem = demo.prepare_out_dir(out, keep=False)
    assert problem is not None and "myproject" in problem
    assert (project / "main.py").read_text() == "code"


def test_a_fresh_start_replaces_the_demos_own_files_only(tmp_path: Path) -> None:
    """An earlier demo's results and state are removed by a fresh start; the directory itself stays."""
    out = tmp_path / "out"
    assert demo.prepare_out_dir(out, keep=False) is None
    files = demo.run_files(sample_manifests()[0], out)
    files.results.write_text("{}\n")
    files.state_dir.mkdir()
    (files.state_dir / "checkpoint.sqlite3").write_bytes(b"")
    assert demo.prepare_out_dir(out, keep=False) is None
    assert not files.results.exists() and not files.state_dir.exists() and out.is_dir()


def test_keep_resumes_instead_of_running_again(tmp_path: Path) -> None:
    """With --keep a second demo finds every item done and submits nothing again."""
    first = run_demo(tmp_path / "out")
    assert first.code == 0, first.stdout
    second = run_demo(tmp_path / "out", keep=True)
    assert second.code == 0, second.stdout
    assert "not submitted again" in second.stdout
    for manifest in sample_manifests():
        keys = [job.key for job in valid_jobs(manifest)]
        assert Counter(line_key(line) for line in result_lines(tmp_path / "out", manifest)) == Counter(keys)


def test_the_demo_writes_each_runs_html_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As every run does, each of the demo's runs writes its HTML report next to its summary
    (the report extra is in the dev install), says so, and no report holds the API key."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PIPELINE_REPORT", "on")
    done = run_demo(tmp_path / "demo-output")
    assert done.code == 0 and "NAME.results.report.html" in done.stdout
    for manifest in sample_manifests():
        report = tmp_path / "demo-output" / f"{demo.output_name(manifest)}.results.report.html"
        assert report.is_file(), report
        assert KNOWN_KEY not in report.read_text(encoding="utf-8")
