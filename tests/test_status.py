"""`status` tells what a resume will do: a run that did not finish is not "completed", a live run
is "running", the command exits with the run's code, and counts are per distinct (item, analysis)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, checkpoint_counts, cli, cli_env, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "status-test-key-41c2"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
CAPS = ("image-analyze", "video-segmentation", "video-snapshot", "video-summarization", "audio-asr")

pytestmark = pytest.mark.slow


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE,
                                         durations={c: (0.5, 1.0) for c in CAPS})


def run_args(tmp: Path, manifest: Path, url: str, *extra: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    return ["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", url,
            "--config", str(cfg), "--progress", "off", *extra]


def status(*state_dirs: Path) -> tuple[int, dict[str, object]]:
    args = ["status", "--json"]
    for state_dir in state_dirs:
        args += ["--state-dir", str(state_dir)]
    done = cli(args)
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {})


def test_status_of_a_live_run_then_after_kill_9(tmp_path: Path) -> None:
    """A live run is "running" (exit 7, no "exit None"); after kill -9 with tasks in flight it is
    "stopped" with exit 3 (what a resume needs), never "completed (exit 0)"."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(10, ["video_snapshot"]))
    state = tmp_path / "results.jsonl.state"
    pending = {c: (3000.0, 3000.0) for c in CAPS}  # tasks stay in flight for the whole test
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=pending)) as emu_thread:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *run_args(tmp_path, manifest, emu_thread.url)],
                                cwd=REPO, env=cli_env(ENV), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if checkpoint_counts(state).get("video_snapshot", {}).get("submitted", 0) >= 10:
                    break
                time.sleep(0.05)
            live = cli(["status", "--state-dir", str(state)])
            live_json = cli(["status", "--state-dir", str(state), "--json"])
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    assert live.returncode == 7, live.stdout + live.stderr
    assert "outcome:   running" in live.stdout and "exit None" not in live.stdout
    assert json.loads(live_json.stdout)["outcome"] == "running"
    text = cli(["status", "--state-dir", str(state)])
    code, report = status(state)
    assert code == 3 and text.returncode == 3, text.stdout
    assert report["outcome"] == "stopped" and report["exit_code"] == 3
    assert report["in_flight_total"] == 10
    assert "completed" not in text.stdout and "resume" in text.stdout


def test_status_exits_with_the_runs_code_and_2_for_no_state(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """`status` exits 0 for a run that succeeded, 1 for one with a rejected line, 2 for a state
    dir that does not exist or is not a checkpoint; with several, the highest code."""
    good = write_manifest(tmp_path / "good.jsonl", items(3))
    assert cli(run_args(tmp_path, good, emu_thread.url), env=ENV).returncode == 0
    code, report = status(tmp_path / "results.jsonl.state")
    assert code == 0 and report["outcome"] == "completed"
    other = tmp_path / "b"
    other.mkdir()
    partial = write_manifest(other / "m.jsonl", [*items(2), "{broken"])
    assert cli(run_args(other, partial, emu_thread.url), env=ENV).returncode == 1
    assert status(other / "results.jsonl.state")[0] == 1
    both, _ = status(tmp_path / "results.jsonl.state", other / "results.jsonl.state")
    assert both == 1
    missing = cli(["status", "--state-dir", str(tmp_path / "nowhere")])
    assert missing.returncode == 2 and "holds no run" in missing.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "checkpoint.sqlite3").write_bytes(b"not sqlite at all" * 100)
    damaged = cli(["status", "--state-dir", str(tmp_path / "empty")])
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr


def test_status_after_append_with_a_repeated_id_counts_it_once(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """--append of a manifest repeating an id already done: status says nothing is left to start
    (the repeated id is one (item, analysis), not two) and the run completed."""
    day1 = write_manifest(tmp_path / "day1.jsonl", items(5))
    repeat = items(1)[0]
    day2 = write_manifest(tmp_path / "day2.jsonl", [repeat, {**items(6)[5], "id": "new-1"}])
    assert cli(run_args(tmp_path, day1, emu_thread.url), env=ENV).returncode == 0
    appended = cli(run_args(tmp_path, day2, emu_thread.url, "--append"), env=ENV)
    assert appended.returncode == 0, appended.stderr[-2000:]
    code, report = status(tmp_path / "results.jsonl.state")
    assert code == 0
    assert report["succeeded"] == 6 and report["items"] == 6 and report["queued"] == 0


def test_an_empty_catalog_is_exit_1_like_validate(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """An empty manifest, or empty stdin, runs to exit 1 (validate says "no items", exit 1) and
    status says the same; a shard that owns none of a non-empty catalog's items still exits 0."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("# nothing yet\n")
    assert cli(["validate", str(empty)]).returncode == 1
    done = cli(run_args(tmp_path, empty, emu_thread.url), env=ENV)
    assert done.returncode == 1 and "no items" in done.stderr, done.stderr[-2000:]
    assert status(tmp_path / "results.jsonl.state")[0] == 1
    # the summary says why exit 1 when nothing failed (what the report's headline and advice read)
    assert json.loads((tmp_path / "results.summary.json").read_text())["reason"] == "the catalog held no items"
    (tmp_path / "p").mkdir()
    piped = subprocess.run([sys.executable, "-m", "pipeline", *run_args(tmp_path / "p", Path("-"), emu_thread.url)],
                           input="", text=True, capture_output=True, cwd=REPO, env=cli_env(ENV), timeout=60,
                           check=False)
    assert piped.returncode == 1, piped.stderr[-2000:]
    (tmp_path / "s").mkdir()
    one = write_manifest(tmp_path / "s" / "one.jsonl", items(1))
    codes = [cli(run_args(tmp_path / "s", one, emu_thread.url, "--shard", f"{k}/4"), env=ENV).returncode
             for k in range(4)]
    assert codes == [0, 0, 0, 0]


def test_status_reads_a_state_dir_from_before_the_manifests_table_without_changing_it(tmp_path: Path) -> None:
    """`status` of a state dir whose manifests are still meta keys (no run of this version opened it)
    counts its items and rejected lines from them, exits with the run's code, and writes nothing."""
    import sqlite3

    from state_support import CAP, SVC, meta_of, previous_state_dir, tables_of

    manifest = str(tmp_path / "m.jsonl")
    state = previous_state_dir(tmp_path / "state", {
        "out": str(tmp_path / "results.jsonl"), "manifests": manifest, "manifest": manifest,
        f"rejected:{manifest}": "1", f"items:{manifest}": "3", f"empty:{manifest}": "0", "last_stop": "null"})
    conn = sqlite3.connect(state / "checkpoint.sqlite3")
    conn.executemany("INSERT INTO jobs (id, capability, service_id, state, status) VALUES (?, ?, ?, 'done', 'SUCCESS')",
                     [(f"item-{i}\x1f{CAP}", CAP, SVC) for i in range(3)])
    conn.commit()
    conn.close()
    before = meta_of(state)
    code, report = status(state)
    assert code == 1 and report["outcome"] == "completed with failures"  # a rejected line: partial
    assert (report["manifests"], report["items"], report["queued"], report["rejected_lines"]) == ([manifest], 3, 0, 1)
    assert meta_of(state) == before and "manifests" not in tables_of(state)


def test_a_run_started_with_a_relative_out_resumes_from_anywhere(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A first run from the manifest's directory with a relative --out, then the same run by
    absolute paths from elsewhere (cron, `pipeline.run` in another working directory): the
    summary it wrote is recognised as its own, so the second run goes on (exit 0), not exit 2."""
    (tmp_path / "x").mkdir()
    write_manifest(tmp_path / "x" / "m.jsonl", items(2))
    first = cli(["run", "x/m.jsonl", "--out", "x/r.jsonl", "--endpoint", emu_thread.url], env=ENV, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli(["run", str(tmp_path / "x" / "m.jsonl"), "--out", str(tmp_path / "x" / "r.jsonl"), "--endpoint",
                 emu_thread.url], env=ENV, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads((tmp_path / "x" / "r.summary.json").read_text())
    assert Path(summary["results"]).is_absolute() and Path(summary["state_dir"]).is_absolute()
