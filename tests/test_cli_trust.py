"""The command line against bad state and bad paths: each gets a clear message and the exit code
of the table, touches nothing it should not, and a second run never shares a state dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, cli, cli_env, config_file, items, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "cli-trust-key-0b7e"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
#: Tasks that stay PENDING for longer than any test: a run a test needs alive cannot finish on its
#: own before the test ends it (on a loaded machine a 3 s task was done before the next step).
PENDING = {cap: (3000.0, 3000.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                              "video-summarization", "audio-asr")}

pytestmark = pytest.mark.slow


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE)


def run_args(tmp: Path, manifest: Path, url: str, *extra: str, out: Path | None = None) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    return ["run", str(manifest), "--out", str(out or tmp / "results.jsonl"), "--endpoint", url,
            "--config", str(cfg), "--progress", "off", *extra]


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=cli_env(ENV), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_lock_and_tasks(state: Path, proc: subprocess.Popen[str]) -> dict[str, object]:
    """Poll `status --json` until the run is live with tasks in flight."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if (state / "checkpoint.sqlite3").exists():
            probe = cli(["status", "--state-dir", str(state), "--json"])
            if probe.returncode == 7:  # status of a live run exits 7, like a run started on it
                report = json.loads(probe.stdout)
                if report["live_run"] and report["in_flight_total"] > 0:
                    return report
        time.sleep(0.05)
    raise AssertionError("the run never showed tasks in flight")


def wait_for_counter(emu_thread: EmulatorThread, name: str, value: int, proc: subprocess.Popen[str]) -> None:
    """Poll the emulator's counters until `name` reaches `value` (while the run is alive)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if emu_thread.counters()[name] >= value:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {value}: {emu_thread.counters()[name]}")


def test_a_second_run_on_a_live_state_dir_exits_7_and_touches_nothing(tmp_path: Path) -> None:
    """While one run holds the state dir, a second exits 7 at once naming the holder's pid and
    writes nothing; status works meanwhile and marks the run live."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(20, ["video_snapshot"]))
    # Tasks that stay PENDING for the whole test: once all 20 are created, the first run has
    # nothing left to submit, so any task created from then on would be the second run's.
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as emu_thread:
        args = run_args(tmp_path, manifest, emu_thread.url)
        first = start(args)
        try:
            wait_for_counter(emu_thread, "tasks_created_total", 20, first)
            report = wait_for_lock_and_tasks(tmp_path / "results.jsonl.state", first)
            assert report["outcome"] == "running"
            files_before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
            created = emu_thread.counters()["tasks_created_total"]
            second = cli(args, env=ENV, timeout=30)
            assert second.returncode == 7, second.stderr
            assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
            files_after = {p: p.stat().st_mtime_ns for p in files_before if p.exists()}
            assert {p for p in files_before if "checkpoint" not in p.name} <= set(files_after)
            assert files_after[tmp_path / "results.rejects.jsonl"] == files_before[tmp_path / "results.rejects.jsonl"]
            assert emu_thread.counters()["tasks_created_total"] == created
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
    assert first.returncode == 3


def test_one_out_with_two_state_dirs_never_runs_twice(tmp_path: Path) -> None:
    """A second run on a live run's --out with its own --state-dir exits 7 (before: it submitted the
    whole catalog again); once the first is stopped with tasks in flight and no line written, a run
    with a new state dir for that --out exits 2 naming the run's state dir; neither sends anything
    or creates its state dir."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(20, ["video_snapshot"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as emu:
        first = start(run_args(tmp_path, manifest, emu.url))
        try:
            wait_for_counter(emu, "tasks_created_total", 20, first)
            wait_for_lock_and_tasks(tmp_path / "results.jsonl.state", first)
            second = cli(run_args(tmp_path, manifest, emu.url, "--state-dir", str(tmp_path / "other.state")), env=ENV,
                         timeout=60)
            assert second.returncode == 7, second.stderr[-2000:]
            assert f"pid {first.pid}" in second.stderr and "results.jsonl.state" in second.stderr
            assert "Traceback" not in second.stderr
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
        assert first.returncode == 3
        assert not (tmp_path / "results.jsonl").exists() or (tmp_path / "results.jsonl").stat().st_size == 0
        third = cli(run_args(tmp_path, manifest, emu.url, "--state-dir", str(tmp_path / "third.state")), env=ENV,
                    timeout=60)
        created = emu.counters()["tasks_created_total"]
    assert third.returncode == 2, third.stderr[-2000:]
    assert f"--state-dir {tmp_path / 'results.jsonl.state'}" in third.stderr and "another --out" in third.stderr
    assert created == 20
    assert not (tmp_path / "other.state").exists() and not (tmp_path / "third.state").exists()


def test_sighup_stops_like_sigterm_with_a_summary(tmp_path: Path) -> None:
    """SIGHUP (a closed terminal) stops the run resumably: exit 3, with the summary written."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(10, ["video_snapshot"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as emu_thread:
        proc = start(run_args(tmp_path, manifest, emu_thread.url))
        wait_for_lock_and_tasks(tmp_path / "results.jsonl.state", proc)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err[-2000:]
    assert "SIGHUP" in err
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["exit_code"] == 3 and summary["outcome"] == "stopped"


def test_an_existing_results_file_is_not_adopted(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A new state dir refuses a non-empty results file it did not write (exit 2, file untouched);
    an unrelated JSONL is refused the same way, never a traceback."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3))
    out = tmp_path / "old.jsonl"
    out.write_text('{"something": "else"}\n')
    done = cli(run_args(tmp_path, manifest, emu_thread.url, out=out), env=ENV)
    assert done.returncode == 2 and "was not written by this run" in done.stderr
    assert out.read_text() == '{"something": "else"}\n'
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("target", ["manifest", "directory", "/dev/null", "under-a-file"])
def test_bad_out_paths_exit_2_before_anything_starts(tmp_path: Path, emu_thread: EmulatorThread, target: str) -> None:
    """--out as the manifest, a directory, a device or under a file: exit 2, nothing sent, no side files."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2))
    (tmp_path / "file").write_text("x")
    out = {"manifest": manifest, "directory": tmp_path, "/dev/null": Path("/dev/null"),
           "under-a-file": tmp_path / "file" / "r.jsonl"}[target]
    done = cli(run_args(tmp_path, manifest, emu_thread.url, out=out), env=ENV)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "--out" in done.stderr
    assert emu_thread.counters()["requests_total"] == 0
    assert not Path("/dev/null.summary.json").exists()


def test_corrupt_state_is_exit_2_with_a_message(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """Random bytes as the checkpoint: status and run both exit 2 saying the state dir is damaged."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2))
    state = tmp_path / "results.jsonl.state"
    state.mkdir()
    (state / "checkpoint.sqlite3").write_bytes(os.urandom(8192))
    status = cli(["status", "--state-dir", str(state)])
    run = cli(run_args(tmp_path, manifest, emu_thread.url), env=ENV)
    for done in (status, run):
        assert done.returncode == 2, done.stderr
        assert "not a readable checkpoint" in done.stderr and "Traceback" not in done.stderr


def test_a_garbage_line_in_the_results_file_is_exit_2(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A non-JSON line appended to the results file: the resume stops with exit 2 naming the file."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(4))
    args = run_args(tmp_path, manifest, emu_thread.url)
    assert cli(args, env=ENV).returncode == 0
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write("garbage\n")
    again = cli(args, env=ENV)
    assert again.returncode == 2 and "not a JSON line" in again.stderr and "results.jsonl" in again.stderr


def test_another_manifest_needs_append(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A second manifest on the same state dir is refused (exit 2) unless --append, which adds its
    items to the run; status then names the new manifest and counts every item."""
    day1 = write_manifest(tmp_path / "day1.jsonl", items(4))
    day2 = write_manifest(tmp_path / "day2.jsonl", [{**item, "id": f"d2-{i}"} for i, item in enumerate(items(3))])
    assert cli(run_args(tmp_path, day1, emu_thread.url), env=ENV).returncode == 0
    refused = cli(run_args(tmp_path, day2, emu_thread.url), env=ENV)
    assert refused.returncode == 2 and "--append" in refused.stderr
    appended = cli(run_args(tmp_path, day2, emu_thread.url, "--append"), env=ENV)
    assert appended.returncode == 0, appended.stderr[-2000:]
    assert len(read_results(tmp_path / "results.jsonl")) == 7
    report = json.loads(cli(["status", "--state-dir", str(tmp_path / "results.jsonl.state"), "--json"]).stdout)
    assert report["manifest"] == str(day2) and report["items"] == 7 and report["succeeded"] == 7


def test_status_json_counts_rejected_lines(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """status --json reports the rejected lines of the run (before: always 0) and the exit code 1."""
    manifest = write_manifest(tmp_path / "m.jsonl", [*items(3), "{broken"])
    done = cli(run_args(tmp_path, manifest, emu_thread.url), env=ENV)
    assert done.returncode == 1
    report = json.loads(cli(["status", "--state-dir", str(tmp_path / "results.jsonl.state"), "--json"]).stdout)
    assert report["rejected_lines"] == 1 and report["exit_code"] == 1 and report["items"] == 3


def test_the_same_shard_twice_cannot_run(tmp_path: Path) -> None:
    """Two pods given the same --shard share its state dir, so the second exits 7; another shard
    of the same command line runs beside it with its own files."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(20, ["video_snapshot"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as emu_thread:
        first = start(run_args(tmp_path, manifest, emu_thread.url, "--shard", "0/2"))
        try:
            wait_for_lock_and_tasks(tmp_path / "results.jsonl.state.shard-0-of-2", first)
            twin = cli(run_args(tmp_path, manifest, emu_thread.url, "--shard", "0/2"), env=ENV, timeout=30)
            assert twin.returncode == 7, twin.stderr
            other = start(run_args(tmp_path, manifest, emu_thread.url, "--shard", "1/2"))
            wait_for_lock_and_tasks(tmp_path / "results.jsonl.state.shard-1-of-2", other)
            other.send_signal(signal.SIGTERM)
            other.communicate(timeout=60)
            assert other.returncode == 3
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
    assert (tmp_path / "results.shard-0-of-2.jsonl").exists() and (tmp_path / "results.shard-1-of-2.jsonl").exists()
