"""Several analyses per item, end to end against the emulator on 127.0.0.1: one line per
(item, analysis) with its own status, segmentation -> summarization chained with the very
chunks the emulator returned, a failed parent never submitting its child, and a kill -9
between the two steps resuming at the second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from run_support import config, emulator, run_once
from support import REPO, checkpoint_counts, cli, cli_env, config_file, read_results, write_manifest

from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings, start_emulator

KEY = "engine-test-key"


def chained(i: int, **extra: Any) -> dict[str, Any]:
    """An item whose video is segmented, then summarized from the segmentation's chunks."""
    return {"id": f"vid-{i:03d}", "oss": f"oss://media/video/v{i}.mp4", "meta": {"n": i},
            "analyses": [{"name": "seg", "capability": "video_segmentation", "output": "oss://media/seg/"},
                         {"name": "summary", "capability": "video_summarization", "after": "seg",
                          "output": "oss://media/sum/", **extra}]}


def by_key(lines: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    keys = [(line["id"], line["analysis"]) for line in lines]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes, f"duplicate lines for {dupes[:5]}"
    return dict(zip(keys, lines, strict=True))


async def test_three_analyses_give_three_lines_with_their_own_statuses(tmp_path: Path) -> None:
    """One image, three analyses (OCR, VLM under its own name, objects): three lines, each with
    the item's id and meta, its analysis name, and its own status."""
    item = {"id": "img-1", "url": "https://example.com/img/cat.jpg", "meta": {"k": 1},
            "analyses": ["image_analyze",
                         {"name": "vlm", "capability": "image_analyze", "service_id": "ops-image-analyze-vlm-001"},
                         "object_detection"]}
    bad = {"id": "img-2", "url": "https://example.com/img/dog.jpg",
           "analyses": ["object_detection", {"name": "ocr", "capability": "image_analyze"}]}
    manifest = write_manifest(tmp_path / "m.jsonl", [item, bad])
    # Every image-analyze task of the emulator fails: each item's other analyses still succeed.
    faults = FaultSettings(task_fail_rate=1.0, routes=("image-analyze",))
    async with start_emulator(emulator(faults=faults)) as emu:
        result = await run_once(tmp_path, manifest, config(emu))
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert set(lines) == {("img-1", "image_analyze"), ("img-1", "vlm"), ("img-1", "object_detection"),
                          ("img-2", "object_detection"), ("img-2", "ocr")}
    assert lines[("img-1", "object_detection")]["status"] == "SUCCESS"
    assert lines[("img-1", "image_analyze")]["status"] == "FAILED"
    assert lines[("img-1", "vlm")]["service_id"] == "ops-image-analyze-vlm-001"
    assert lines[("img-1", "vlm")]["capability"] == "image_analyze"
    assert all(line["meta"] == {"k": 1} for k, line in lines.items() if k[0] == "img-1")
    assert result.exit_code == ExitCode.PARTIAL
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["succeeded"] == 2 and summary["failed"] == 3


async def test_summarization_after_segmentation_gets_its_chunks(tmp_path: Path) -> None:
    """The summarization is sent the segmentation's result as input.chunks: the emulator checks
    they are exactly the chunks it returned for that video (a mismatch would be a 400)."""
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(i) for i in range(4)])
    async with start_emulator(emulator()) as emu:
        result = await run_once(tmp_path, manifest, config(emu))
        counters = emu.counters()
    assert result.exit_code == ExitCode.OK, result.summary
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert len(lines) == 8
    for i in range(4):
        seg, summary = lines[(f"vid-{i:03d}", "seg")], lines[(f"vid-{i:03d}", "summary")]
        assert seg["status"] == summary["status"] == "SUCCESS"
        # The emulator's summary repeats each chunk's transcript: they came from this segmentation.
        transcripts = [c["transcript"] for c in seg["data"]]
        assert [c["enhanced_transcript"] for c in summary["data"]["chunks"]] == transcripts
        assert summary["finished_at"] >= seg["finished_at"]
    assert counters["chained_chunks_matched"] == 4
    assert counters["chained_chunks_mismatched"] == 0


async def test_a_failed_parent_fails_its_child_unsubmitted(tmp_path: Path) -> None:
    """Every segmentation fails: each summarization is written FAILED with DependencyFailed and
    the service never sees a summarization request (nothing billed)."""
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(i) for i in range(3)])
    faults = FaultSettings(task_fail_rate=1.0, routes=("video-segmentation",))
    async with start_emulator(emulator(faults=faults)) as emu:
        result = await run_once(tmp_path, manifest, config(emu))
        counters = emu.counters()
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert len(lines) == 6
    for i in range(3):
        child = lines[(f"vid-{i:03d}", "summary")]
        assert child["status"] == "FAILED"
        assert child["error"]["code"] == "DependencyFailed"
        assert "'seg'" in child["error"]["message"]
        assert child["task_id"] is None and child["attempts"] == 0
    assert counters["tasks_created"].get("video-summarization", 0) == 0
    assert not any(route.startswith("POST video-summarization") for route in counters["requests"])
    assert result.exit_code == ExitCode.PARTIAL
    assert result.summary["failed"] == 6


async def test_retry_failed_after_the_parent_is_fixed_runs_the_child(tmp_path: Path) -> None:
    """--retry-failed reopens the failed parent and its DependencyFailed child; once the
    parent succeeds, the child is submitted with its chunks. One line per analysis in the end."""
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(0)])
    async with start_emulator(emulator(faults=FaultSettings(task_fail_rate=1.0,
                                                            routes=("video-segmentation",)))) as emu:
        first = await run_once(tmp_path, manifest, config(emu))
    assert first.exit_code == ExitCode.PARTIAL
    async with start_emulator(emulator()) as emu:
        second = await run_once(tmp_path, manifest, config(emu), retry_failed=True)
        counters = emu.counters()
    assert second.exit_code == ExitCode.OK, second.summary
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert {k: v["status"] for k, v in lines.items()} == {("vid-000", "seg"): "SUCCESS",
                                                         ("vid-000", "summary"): "SUCCESS"}
    assert counters["chained_chunks_matched"] == 1


async def test_a_resume_decides_children_from_parents_done_earlier(tmp_path: Path) -> None:
    """A run stopped after the parents' lines: the next run reads the parents' results back
    from the results file and submits only the children, with the parents' chunks."""
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(i) for i in range(3)])
    seg_only = write_manifest(tmp_path / "seg.jsonl", [
        {**chained(i), "analyses": chained(i)["analyses"][:1]} for i in range(3)])
    async with start_emulator(emulator()) as emu:
        # The same state dir, first with only the parents (--append brings the full manifest in).
        files_first = await run_once(tmp_path, seg_only, config(emu))
        assert files_first.exit_code == ExitCode.OK
        from pipeline.core.results import RunFiles
        from pipeline.engine.runner import RunRequest, run
        request = RunRequest(manifest=str(manifest), files=RunFiles(tmp_path / "results.jsonl", tmp_path / "state"),
                             api_key=KEY, config=config(emu), append=True)
        second = await run(request)
        counters = emu.counters()
    assert second.exit_code == ExitCode.OK, second.summary
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert len(lines) == 6
    assert counters["tasks_created"]["video-segmentation"] == 3  # the parents: once, in the first run
    assert counters["tasks_created"]["video-summarization"] == 3
    assert counters["chained_chunks_matched"] == 3


# ---- kill -9 between the two steps (the CLI in a subprocess) ----------------------------------

SCALE = 10.0
SUBMIT_WORKERS = 2
# Segmentations end fast; summarizations take long: the kill lands between the two steps.
SLOW_SUMMARY = {"video-segmentation": (0.5, 1.0), "video-summarization": (30.0, 40.0)}


@pytest.mark.slow
def test_kill_9_between_the_two_steps_resumes_at_the_second(tmp_path: Path) -> None:
    """kill -9 once every segmentation is done and summarizations are under way; the resume
    writes every missing line once, and never submits a segmentation again."""
    n = 12
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(i) for i in range(n)])
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=SLOW_SUMMARY)
    env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
    with EmulatorThread(settings) as emu:
        cfg = config_file(tmp_path / "cfg.yaml", qps_headroom=0.9, submit_workers=SUBMIT_WORKERS,
                          polling={"first_delay": 1.0, "max_delay": 5.0})
        args = ["run", str(manifest), "--out", str(tmp_path / "results.jsonl"), "--state-dir",
                str(tmp_path / "state"), "--endpoint", emu.url, "--config", str(cfg)]
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, text=True, env=cli_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        counts: dict[str, dict[str, int]] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            counts = checkpoint_counts(tmp_path / "state")
            if counts.get("video_segmentation", {}).get("SUCCESS", 0) == n \
                    and counts.get("video_summarization", {}).get("submitted", 0) >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the kill"
        proc.kill()
        proc.communicate(timeout=30)
        summaries_done = counts.get("video_summarization", {}).get("SUCCESS", 0)
        assert summaries_done < n, "every summary was done before the kill"
        final = cli(args, env=env, timeout=180)
        counters = emu.counters()
    assert final.returncode == 0, final.stderr[-2000:]
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert len(lines) == 2 * n
    assert all(line["status"] == "SUCCESS" for line in lines.values())
    assert counters["tasks_created"]["video-segmentation"] == n  # 0 resubmitted parents
    assert counters["chained_chunks_mismatched"] == 0
    # Summaries recorded as submitted were polled, not sent again: only a submit on the wire at
    # the kill (one per worker at most) can have been sent twice.
    assert counters["duplicate_submissions"] <= SUBMIT_WORKERS


async def test_a_txt_manifest_with_run_wide_analyses(tmp_path: Path) -> None:
    """`run photos.txt --analyses image_analyze,object_detection`: each line's source gets both
    analyses; a second run with one more analysis runs only that one."""
    from pipeline.core.results import RunFiles
    from pipeline.engine.runner import RunRequest, run

    manifest = tmp_path / "photos.txt"
    manifest.write_text("# holiday photos\nhttps://example.com/p/1.jpg\n\nhttps://example.com/p/2.png\n")
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    async with start_emulator(emulator()) as emu:
        first = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=config(emu),
                                     analyses=("object_detection",)))
        second = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=config(emu),
                                      analyses=("object_detection", "image_analyze")))
        counters = emu.counters()
    assert first.exit_code == second.exit_code == ExitCode.OK, second.summary
    lines = by_key(read_results(tmp_path / "results.jsonl"))
    assert sorted(analysis for _, analysis in lines) == ["image_analyze", "image_analyze",
                                                          "object_detection", "object_detection"]
    assert len({item_id for item_id, _ in lines}) == 2  # the same derived id for a line's two analyses
    assert counters["duplicate_submissions"] == 0
    assert sum(counters["tasks_created"].values()) == 2  # the second run: the two OCR tasks only


def test_export_by_item_after_a_run(tmp_path: Path) -> None:
    """The CLI's export of a finished run: one object per item with every analysis under its name."""
    manifest = write_manifest(tmp_path / "m.jsonl", [chained(0), chained(1)])
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE,
                                         durations={"video-segmentation": (0.5, 1.0),
                                                    "video-summarization": (0.5, 1.0)})) as emu:
        env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
        done = cli(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", emu.url], env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = cli(["export", "--by-item", "--state-dir", str(tmp_path / "r.jsonl.state")])
    assert exported.returncode == 0, exported.stderr
    items = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [item["id"] for item in items] == ["vid-000", "vid-001"]
    for item in items:
        assert item["status"] == "SUCCESS" and sorted(item["analyses"]) == ["seg", "summary"]
        assert item["meta"] == {"n": int(item["id"][-1])}
