"""The command line in subprocesses: exit codes, validate, status, logs and plain progress."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, cli, cli_env, config_file, items, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings

KEY = "cli-test-key-19ac"
SCALE = 10.0
FAST = {cap: (0.5, 2.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}

pytestmark = pytest.mark.slow


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST)


def run_args(tmp: Path, manifest: Path, emu_thread: EmulatorThread, **cfg: object) -> list[str]:
    values = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}
    values.update(cfg)
    return ["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", emu_thread.url,
            "--config", str(config_file(tmp / "cfg.yaml", **values))]


ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}


def test_success_exits_0_with_summary_files(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A clean run exits 0, prints the summary, and writes the summary JSON next to the results."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(12))
    done = cli(run_args(tmp_path, manifest, emu_thread), env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "succeeded 12" in done.stderr and "results.summary.json" in done.stderr
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["outcome"] == "completed" and summary["succeeded"] == 12
    assert (tmp_path / "results.jsonl.state").is_dir()  # default state dir next to the results


def test_partial_failure_exits_1(tmp_path: Path) -> None:
    """Items whose tasks FAIL make the run exit 1, with the failures counted by code."""
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST,
                                faults=FaultSettings(task_fail_rate=0.3))
    manifest = write_manifest(tmp_path / "m.jsonl", items(30, ["audio_asr"]))
    with EmulatorThread(settings) as emu_thread:
        done = cli(run_args(tmp_path, manifest, emu_thread), env=ENV)
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["failed"] > 0 and summary["capabilities"]["audio_asr"]["failed_by_code"]["TaskFailed"] > 0
    assert summary["failed"] + summary["succeeded"] == len(read_results(tmp_path / "results.jsonl")) == 30


@pytest.mark.parametrize("config_text, key", [
    ("submit_wrokers: 4\n", "submit_wrokers"),
    ("retry:\n  max_attempts: many\n", "retry.max_attempts"),
    ("qps:\n  image_analyze: -5\n", "qps.image_analyze"),
    ("polls_share_qps: maybe\n", "polls_share_qps"),
])
def test_bad_config_exits_2_naming_key_and_file(tmp_path: Path, config_text: str, key: str) -> None:
    """A wrong key, type or value is exit 2 with a message naming the key and the file, no traceback."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(config_text)
    manifest = write_manifest(tmp_path / "m.jsonl", items(1))
    done = cli(["run", str(manifest), "--config", str(cfg), "--endpoint", "http://127.0.0.1:9"], env=ENV)
    assert done.returncode == 2
    assert key in done.stderr and str(cfg) in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_endpoint_or_key_exits_2(tmp_path: Path) -> None:
    """Without an endpoint, or without DASHSCOPE_API_KEY, the run refuses to start with exit 2."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1))
    no_endpoint = cli(["run", str(manifest)], env=ENV)
    assert no_endpoint.returncode == 2 and "--endpoint" in no_endpoint.stderr
    no_key = cli(["run", str(manifest), "--endpoint", "http://127.0.0.1:9"])
    assert no_key.returncode == 2 and "DASHSCOPE_API_KEY" in no_key.stderr


def test_bad_manifest_exits_2(tmp_path: Path) -> None:
    """A manifest that does not exist, or of an unknown format, is exit 2 with a clear message."""
    missing = cli(["run", str(tmp_path / "nope.jsonl"), "--endpoint", "http://127.0.0.1:9"], env=ENV)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    odd = tmp_path / "m.tsv"
    odd.write_text("{}\n")
    wrong = cli(["validate", str(odd)])
    assert wrong.returncode == 2 and ".jsonl" in wrong.stderr
    assert "Traceback" not in missing.stderr + wrong.stderr


def test_validate_reports_every_problem_and_a_cost(tmp_path: Path) -> None:
    """validate counts items by capability and source, lists each bad line with its number,
    estimates the cost, exits 1 on problems and 0 when clean, and touches no network."""
    good = items(6)
    manifest = write_manifest(tmp_path / "m.jsonl", [good[0], "{oops", good[1],
                                                       {"capability": "image_analyze"}, *good[2:]])
    bad = cli(["validate", str(manifest)])
    assert bad.returncode == 1
    assert "line 2:" in bad.stdout and "line 4:" in bad.stdout and "no source" in bad.stdout
    assert "6 valid items, 2 rejected lines" in bad.stdout
    clean = write_manifest(tmp_path / "clean.jsonl", good)
    ok = cli(["validate", str(clean), "--json"])
    assert ok.returncode == 0
    report = json.loads(ok.stdout)
    assert report["valid_items"] == 6 and report["by_capability"]["video_summarization"]["sources"] == {"oss": 1}
    # one of each: ocr 0.001 + detect 0.002 + snapshot 0.002 + summarization (0.001 + 20000*0.002 + 2000*0.004)
    assert report["estimated_cost"] == pytest.approx(0.005 + 0.001 + 40 + 8)
    assert report["estimated_cost_bound"] > report["estimated_cost"] and report["currency"] == "CNY"


def test_status_during_and_after_a_run(tmp_path: Path) -> None:
    """status reads a running run's checkpoint (in flight > 0) and, after, agrees with the file."""
    slow = {cap: (20.0, 30.0) for cap in FAST}
    manifest = write_manifest(tmp_path / "m.jsonl", items(40, ["video_snapshot", "object_detection"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=slow)) as emu_thread:
        args = run_args(tmp_path, manifest, emu_thread)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=cli_env(ENV),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        state = tmp_path / "results.jsonl.state"
        during = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if (state / "checkpoint.sqlite3").exists():
                probe = cli(["status", "--state-dir", str(state), "--json"])
                if probe.returncode in (0, 7) and json.loads(probe.stdout)["in_flight_total"] > 0:  # 7: live
                    during = json.loads(probe.stdout)
                    break
            time.sleep(0.05)
        proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert during is not None, "status never saw the run in flight"
    assert during["outcome"] == "running" and during["live_run"]["pid"] == proc.pid
    after = cli(["status", "--state-dir", str(state)])
    assert after.returncode == 0
    lines = read_results(tmp_path / "results.jsonl")
    assert f"{len(lines)} succeeded, 0 failed, 0 rejected lines" in after.stdout
    assert "outcome:   completed (exit 0)" in after.stdout
    assert "not started: 0 of 40 (item, analysis) results" in after.stdout
    nothing = cli(["status", "--state-dir", str(tmp_path / "empty")])
    assert nothing.returncode == 2


def test_json_logs_and_plain_progress(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """With --log-format json every stderr line is a JSON object, and when stderr is not a
    terminal the progress comes as plain periodic lines (here carried in the JSON records)."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(60))
    args = [*run_args(tmp_path, manifest, emu_thread, progress_interval=0.2), "--log-format", "json"]
    done = cli(args, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    progress = [r for r in records if "progress" in r]
    assert progress and progress[-1]["message"].startswith("progress:")
    assert records[-1]["summary"]["succeeded"] == 60
    (tmp_path / "t").mkdir()
    text = cli(run_args(tmp_path / "t", manifest, emu_thread, progress_interval=0.2), env=ENV)
    assert text.returncode == 0
    plain = [line for line in text.stderr.splitlines() if "progress: " in line]
    assert plain and "image_analyze: q=" in plain[-1]


@pytest.mark.parametrize("flags", [[], ["-v"], ["-vv"]])
def test_verbosity_says_what_each_stage_decided_then_every_request(tmp_path: Path, emu_thread: EmulatorThread,
                                                                   flags: list[str]) -> None:
    """-v adds what the resume, the reader, the pacers and the pollers decided; -vv adds one line per
    HTTP exchange (method, path, status; never the key); without either, neither appears."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(6, ["image_analyze", "object_detection"]))
    done = cli([*run_args(tmp_path, manifest, emu_thread), "--progress", "off", *flags], env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    stage_lines = ("resume: 0 (item, analysis) results done", "reader: read all of the manifest",
                   "6 queued to submit", "pacer image_analyze: 3 submits waited", "poller image_analyze:")
    request_line = "POST /image-object-detection/ops-object-detect-001 -> 200 in "
    assert all((line in done.stderr) == bool(flags) for line in stage_lines), done.stderr[-3000:]
    assert (request_line in done.stderr) == (flags == ["-vv"]), done.stderr[-3000:]
    assert KEY not in done.stderr


def test_a_time_limit_on_a_finished_run_stops_nothing(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """Resuming a finished run with a --max-duration shorter than anything exits 0 as the run did, not
    3 'time limit reached': the limit came when nothing was left to stop."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(40, ["object_detection"]))
    first = cli(run_args(tmp_path, manifest, emu_thread), env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli([*run_args(tmp_path, manifest, emu_thread), "--max-duration", "0.0001"], env=ENV)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "results.summary.json").read_text())["outcome"] == "completed"
