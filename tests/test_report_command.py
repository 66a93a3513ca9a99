"""The run report of real runs against the emulator: written at the end of every run, `report
--state-dir` (also of a live run and of a state dir from before the history), the --out it
refuses, the history across a kill -9, and no failure when the `report` extra is missing."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, cli, cli_env, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings
from pipeline.state.checkpoint import Checkpoint

KEY = "report-test-key-0b7e"
SCALE = 10.0
FAST = {cap: (0.5, 20.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                      "video-summarization", "audio-asr")}
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE), "PIPELINE_REPORT": "on"}

pytestmark = pytest.mark.slow


def run_args(tmp: Path, manifest: Path, url: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    return ["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", url, "--config", str(cfg)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of 60 mixed items, a few of whose tasks fail: its folder."""
    tmp = tmp_path_factory.mktemp("finished")
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST,
                                faults=FaultSettings(task_fail_rate=0.05))
    with EmulatorThread(settings) as emu:
        done = cli(run_args(tmp, write_manifest(tmp / "m.jsonl", items(60)), emu.url), env=ENV)
    assert done.returncode == 1, done.stderr[-2000:]
    return tmp


def test_every_run_writes_its_report_next_to_the_summary(finished: Path) -> None:
    """The run's results.report.html holds its outcome, every plot of a run with failures, its
    failures with the command that retries them, and its session in the history."""
    page = (finished / "results.report.html").read_text(encoding="utf-8")
    assert "Completed with failures — exit code 1" in page
    for plot in ("requests", "in-flight", "durations", "detection-lag", "failures", "cost", "history"):
        assert f'data-plot="{plot}"' in page, plot
    assert 'id="history-table"' in page and 'id="no-series"' not in page
    assert "--retry-failed" in page and KEY not in page
    summary = json.loads((finished / "results.summary.json").read_text())
    assert f'<code>TaskFailed</code></td><td class="n">{summary["failed"]}</td>' in page


def test_report_command_writes_where_told(finished: Path, tmp_path: Path) -> None:
    """`report --state-dir DIR --out FILE` writes the report there and prints where; run again,
    it replaces its own earlier report."""
    out = tmp_path / "night.html"
    for _ in range(2):
        done = cli(["report", "--state-dir", str(finished / "results.jsonl.state"), "--out", str(out)])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(out)
    assert "Completed with failures" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["results.jsonl", "results.summary.json", "results.rejects.jsonl", "m.jsonl",
                                  "cfg.yaml", "results.jsonl.state/report.html"])
def test_report_refuses_the_runs_own_files(finished: Path, name: str) -> None:
    """--out naming the run's results, summary, rejects, manifest, config or a path in its state dir
    exits 2 and changes nothing."""
    target = finished / name
    before = target.read_bytes() if target.exists() else None
    done = cli(["report", "--state-dir", str(finished / "results.jsonl.state"), "--out", str(target)])
    assert done.returncode == 2, done.stderr
    assert "--out" in done.stderr
    assert (target.read_bytes() if target.exists() else None) == before


def test_report_refuses_an_unwritable_out(finished: Path, tmp_path: Path) -> None:
    """--out in a directory that does not exist, or that cannot be written, exits 2."""
    missing = cli(["report", "--state-dir", str(finished / "results.jsonl.state"),
                   "--out", str(tmp_path / "no" / "such" / "r.html")])
    assert missing.returncode == 2, missing.stderr
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes in any directory; not in sysfs, where no file can be made
        locked = Path("/sys")
    done = cli(["report", "--state-dir", str(finished / "results.jsonl.state"), "--out", str(locked / "r.html")])
    assert done.returncode == 2 and "cannot be written" in done.stderr, done.stderr


def test_a_state_dir_from_before_the_history(finished: Path, tmp_path: Path) -> None:
    """A state dir without the history's tables gets a report that says there is no history and
    no time series, and shows the run's summary."""
    old = tmp_path / "old.state"
    old.mkdir()
    conn = sqlite3.connect(finished / "results.jsonl.state" / Checkpoint.DB_NAME)
    conn.execute("VACUUM INTO ?", (str(old / Checkpoint.DB_NAME),))
    conn.close()
    conn = sqlite3.connect(old / Checkpoint.DB_NAME)
    for table in ("sessions", "sessions_older", "series", "histograms"):
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    out = tmp_path / "old.html"
    done = cli(["report", "--state-dir", str(old), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert 'id="no-history"' in page and 'id="no-series"' in page
    assert "Completed with failures — exit code 1" in page


def test_a_live_run_is_reported_as_a_snapshot_and_a_kill_is_history(tmp_path: Path) -> None:
    """While a run is going its report is marked live (outcome "running", no exit code) and shows
    the requests sent so far; killed
    with SIGKILL, its session is recorded as interrupted by the next run, which completes."""
    # Tasks that stay PENDING until the kill, whatever the machine's load: the first run cannot end on its own.
    slow = {cap: (3000.0, 3000.0) for cap in FAST}
    manifest = write_manifest(tmp_path / "m.jsonl", items(24, ["video_snapshot", "audio_asr"]))
    state = tmp_path / "results.jsonl.state"
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=slow)) as emu:
        args = run_args(tmp_path, manifest, emu.url)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=cli_env(ENV),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_a_sample(state, proc)
            live = cli(["report", "--state-dir", str(state), "--out", str(tmp_path / "live.html")])
            assert live.returncode == 0, live.stderr
            page = (tmp_path / "live.html").read_text(encoding="utf-8")
            assert 'id="live"' in page and "Running (live)" in page and "tone-live" in page
            assert 'data-plot="requests"' in page and 'data-plot="in-flight"' in page
            # the per-capability table's requests column: what the session has sent so far, not 0
            sent = re.findall(r'<td class="n">([\d,]+)</td><td class="n">[\d,]+</td>\n<td class="n" title=', page)
            assert sent and sum(int(n.replace(",", "")) for n in sent) > 0, sent
            assert proc.poll() is None  # still live when the report was taken
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        port = int(emu.url.rsplit(":", 1)[1])
    # The same address (another service is refused while tasks are recorded), tasks that end quickly:
    # the resume's recorded tasks are unknown there, so sent once more.
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST), port=port) as emu:
        again = cli(run_args(tmp_path, manifest, emu.url), env=ENV, timeout=240)
        assert again.returncode == 0, again.stderr[-2000:]
    done = cli(["status", "--history", "--json", "--state-dir", str(state)])
    assert done.returncode == 0, done.stderr
    sessions = json.loads(done.stdout)["runs"][0]["sessions"]
    assert [s["outcome"] for s in sessions] == ["interrupted", "completed"]
    assert sessions[0]["ended"] is None and sessions[0]["requests"] > 0  # its progress was kept
    assert sessions[1]["exit_code"] == 0
    text = cli(["status", "--history", "--state-dir", str(state)])
    assert "interrupted" in text.stdout and "completed (exit 0)" in text.stdout


def _wait_for_a_sample(state: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the live run has recorded a sample with tasks in flight (or it ended: a failure)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it was seen live"
        if (state / Checkpoint.DB_NAME).exists():
            try:
                ckpt = Checkpoint.open(state, read_only=True)
            except Exception:  # being created right now
                ckpt = None
            if ckpt is not None:
                try:
                    rows, _ = ckpt.history()
                    if rows and any(s.in_flight for s in ckpt.samples(rows[-1].id)):
                        return
                except sqlite3.OperationalError:
                    pass
                finally:
                    ckpt.close()
        time.sleep(0.05)
    raise AssertionError("the run recorded no sample with tasks in flight")


def test_without_the_report_extra_a_run_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """At the end of a run without Jinja2 and matplotlib: one warning naming the extra, no file, no error."""
    from pipeline.cli import report
    from pipeline.config.load import Config
    from pipeline.core.results import RunFiles

    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    files = RunFiles.for_results(tmp_path / "results.jsonl")
    with caplog.at_level(logging.INFO, logger="pipeline.report"):
        assert report.write_run_report(files, Config()) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "WARNING", "no HTML report written: the HTML report needs the optional `report` extra (jinja2, matplotlib "
        "not installed): pip install 'opensearch-media-pipeline[report]' (PIPELINE_REPORT=off leaves it out)")]
    assert not files.report.exists()


def test_pipeline_report_off_writes_no_report(tmp_path: Path) -> None:
    """PIPELINE_REPORT=off: the run ends without drawing results.report.html (report --state-dir
    still draws it on demand)."""
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST)) as emu:
        done = cli(run_args(tmp_path, write_manifest(tmp_path / "m.jsonl", items(4)), emu.url),
                   env={**ENV, "PIPELINE_REPORT": "off"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "results.summary.json").exists() and not (tmp_path / "results.report.html").exists()
    drawn = cli(["report", "--state-dir", str(tmp_path / "results.jsonl.state")])
    assert drawn.returncode == 0 and (tmp_path / "results.report.html").exists(), drawn.stderr[-2000:]


def test_a_session_killed_after_a_finished_one_is_not_reported_from_the_old_summary(
        finished: Path, tmp_path: Path) -> None:
    """A later session killed before it wrote a summary leaves the earlier session's summary
    file behind: the report takes the outcome from the checkpoint (exit 3, resume), not from
    that file's "completed"."""
    import shutil

    state = tmp_path / "results.jsonl.state"
    shutil.copytree(finished / "results.jsonl.state", state)
    shutil.copy(finished / "results.jsonl", tmp_path / "results.jsonl")
    summary = json.loads((finished / "results.summary.json").read_text())
    summary.update(state_dir=str(state), results=str(tmp_path / "results.jsonl"))  # as if written here
    (tmp_path / "results.summary.json").write_text(json.dumps(summary))
    ckpt = Checkpoint.open(state)
    try:
        ckpt.set_meta("out", str((tmp_path / "results.jsonl").resolve()))
        from pipeline.core.outcome import UNFINISHED

        ckpt.set_last_stop(UNFINISHED.to_record())  # what a session does first; then the kill -9
        ckpt.begin_session()
        ckpt.start_session(os.stat(tmp_path / "results.summary.json").st_mtime + 1)
    finally:
        ckpt.close()
    status = cli(["status", "--state-dir", str(state)])
    assert status.returncode == 3, status.stdout
    done = cli(["report", "--state-dir", str(state), "--out", str(tmp_path / "after.html")])
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "after.html").read_text(encoding="utf-8")
    assert "exit code 3" in page and "Completed" not in page.split("</h1>")[0]
