"""The CLI in a subprocess: kill -9 at random moments, signals, a wrong key, and no key leaks."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    REPO,
    assert_exactly_once,
    checkpoint_counts,
    cli,
    cli_env,
    config_file,
    items,
    jobs_of,
    read_results,
    write_manifest,
)

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings
from pipeline.state.checkpoint import Checkpoint

KEY = "crash-test-key-5f1d0c"
WRONG = "wrong-key-77aa31"
SCALE = 10.0
DURATIONS = {cap: (2.0, 8.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                          "video-summarization", "audio-asr")}
SUBMIT_WORKERS = 2
#: The run's environment: the key, and the emulator's time scale (a test facility, env only).
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}

pytestmark = pytest.mark.slow


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE, durations=DURATIONS)


def _args(tmp: Path, manifest: Path, emu_thread: EmulatorThread, *extra: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, submit_workers=SUBMIT_WORKERS,
                      polling={"first_delay": 2.0, "max_delay": 10.0})
    return ["run", str(manifest), "--out", str(tmp / "out" / "results.jsonl"), "--state-dir",
            str(tmp / "state"), "--endpoint", emu_thread.url, "--config", str(cfg), *extra]


def _start(args: list[str], key: str = KEY) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, text=True,
                            env=cli_env({**ENV, "DASHSCOPE_API_KEY": key}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _state_counts(state_dir: Path) -> dict[str, int]:
    """{"submitted": n, "SUCCESS": n, "FAILED": n, ...} over every capability (read-only)."""
    totals: dict[str, int] = {}
    for counts in checkpoint_counts(state_dir).values():
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    return totals


def _wait_for(state_dir: Path, proc: subprocess.Popen[str], ready: Callable[[dict[str, int]], bool],
              timeout: float = 60) -> dict[str, int]:
    """Wait until the run's checkpoint satisfies `ready` (or the run ends): no sleep-then-hope."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        counts = _state_counts(state_dir)
        if ready(counts):
            return counts
        time.sleep(0.02)
    return _state_counts(state_dir)


def test_kill_9_at_random_moments_then_resume(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """After kill -9 at four random instants and a final resume, the results hold exactly one
    line per item, and resubmissions are bounded by the submits in flight at each kill."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(600))
    args = _args(tmp_path, manifest, emu_thread)
    rng = random.Random(20261125)
    kills = 0
    for round_ in range(4):
        proc = _start(args)
        # Kill at a random point of progress: after a random number of further items are done.
        target = (round_ + 1) * 100 + rng.randint(0, 60)
        _wait_for(tmp_path / "state", proc, lambda c, t=target: c.get("SUCCESS", 0) >= t)
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup of any kind
            kills += 1
        proc.communicate(timeout=30)
    final = cli(args, env=ENV, timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    lines = read_results(tmp_path / "out" / "results.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    assert all(line["status"] == "SUCCESS" for line in lines)
    counters = emu_thread.counters()
    # Only submits on the wire at a kill can be lost and redone: at most one per worker.
    bound = kills * SUBMIT_WORKERS * 6
    assert counters["duplicate_submissions"] <= bound, (counters["duplicate_submissions"], bound)
    assert kills >= 2, "the run finished before most kills: make the manifest larger"
    assert len(counters["submissions"]) == 600  # every item's body reached the service


def test_sigterm_stops_cleanly_and_resumes(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """SIGTERM stops taking items, records what is in flight, exits 3; the resume completes
    with exactly one line per item and no duplicate submission."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(120))
    args = _args(tmp_path, manifest, emu_thread)
    proc = _start(args)
    _wait_for(tmp_path / "state", proc, lambda c: c.get("submitted", 0) >= 10 and c.get("SUCCESS", 0) >= 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err[-2000:]
    assert "interrupted" in err
    state = Checkpoint.open(tmp_path / "state", read_only=True)
    try:
        submitted = sum(c.get("submitted", 0) for c in state.counts().values())
    finally:
        state.close()
    partial = read_results(tmp_path / "out" / "results.jsonl")
    assert len(partial) < 120
    final = cli(args, env=ENV, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_exactly_once(read_results(tmp_path / "out" / "results.jsonl"), jobs_of(manifest))
    assert emu_thread.counters()["duplicate_submissions"] == 0
    assert submitted > 0, "SIGTERM came after every task finished: nothing in flight was tested"


@pytest.mark.timing
def test_wrong_key_exit_4_and_key_never_written(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A 401 exits 4 within seconds; neither key appears in results, state, summary or logs."""
    manifest = write_manifest(tmp_path / "m.jsonl", [*items(30), "{broken"])
    args = _args(tmp_path, manifest, emu_thread, "-v")
    started = time.monotonic()
    bad = cli(args, env={**ENV, "DASHSCOPE_API_KEY": WRONG}, timeout=60)
    assert bad.returncode == 4, bad.stderr[-2000:]
    assert time.monotonic() - started < 10
    good = cli([*args, "--log-format", "json"], env=ENV, timeout=120)
    assert good.returncode == 1, good.stderr[-2000:]  # the broken line makes it partial
    assert_exactly_once(read_results(tmp_path / "out" / "results.jsonl"), jobs_of(manifest))
    for log_line in good.stderr.splitlines():
        if log_line.startswith("{"):
            json.loads(log_line)
    texts = [bad.stdout, bad.stderr, good.stdout, good.stderr]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "cfg.yaml"]
    assert any(p.name.endswith(".sqlite3") for p in files)
    for path in files:
        texts.append(path.read_bytes().decode("utf-8", "replace"))
    for key in (KEY, WRONG):
        assert not any(key in text for text in texts), "API key leaked"


@pytest.mark.timing
def test_second_signal_exits_at_once_and_stays_consistent(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """While the first SIGINT waits for slow submits on the wire, a second SIGINT exits 3 at
    once; the resume still ends with exactly one line per item."""
    # Every answer takes 60 real seconds and the request timeout lets the first drain wait for
    # them, so an exit well before that can only be the second signal's (a margin of seconds, not
    # of tenths, on a busy machine).
    emu_thread.update_faults(slow_rate=1.0, slow_seconds=600.0)
    manifest = write_manifest(tmp_path / "m.jsonl", items(60))
    args = _args(tmp_path, manifest, emu_thread)
    config_file(tmp_path / "cfg.yaml", qps_headroom=0.9, submit_workers=SUBMIT_WORKERS, request_timeout=900.0,
                polling={"first_delay": 2.0, "max_delay": 10.0})
    proc = _start(args)
    results = tmp_path / "out" / "results.jsonl"
    deadline = time.monotonic() + 90  # until requests are on the wire, held by the emulator
    while time.monotonic() < deadline and emu_thread.counters()["faults"]["slow"] < 1:
        time.sleep(0.02)
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    proc.send_signal(signal.SIGINT)  # the drain now waits for the submits out
    deadline = time.monotonic() + 60  # until the run says it drains: the first signal was handled
    while time.monotonic() < deadline and not any("second Ctrl-C exits now" in line for line in lines):
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    reader.join(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    err = "".join(lines)
    assert proc.returncode == 3, err[-2000:]
    assert time.monotonic() - sent < 20.0
    assert "second SIGINT" in err
    emu_thread.update_faults(slow_rate=0.0)
    final = cli(args, env=ENV, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_exactly_once(read_results(results), jobs_of(manifest))


@pytest.mark.timing
def test_sigterm_ends_a_busy_run_promptly(tmp_path: Path) -> None:
    """With limits off and instant tasks (thousands of polls a second), the first SIGTERM still
    ends the run within seconds: neither a poller nor a submit worker left waiting on an empty
    queue (object detection's few slow items) may keep the shutdown waiting."""
    caps = ("image-analyze", "image-object-detection", "video-segmentation", "video-snapshot",
            "video-summarization", "audio-asr")
    settings = EmulatorSettings(api_key=KEY, qps={c: 100_000 for c in caps},
                                durations={c: (0.0, 0.0) for c in caps if c != "image-object-detection"},
                                faults=FaultSettings(slow_rate=1.0, slow_seconds=3.0,
                                                     routes=("image-object-detection",)))
    manifest = write_manifest(tmp_path / "m.jsonl", items(4, ["object_detection"]) + [
        {**item, "id": f"later-{i}"} for i, item in enumerate(items(40_000, ["image_analyze", "audio_asr"]))])
    cfg = config_file(tmp_path / "cfg.yaml", polling={"first_delay": 0.005},
                      qps={name: 100_000 for name in ("image_analyze", "object_detection", "video_segmentation",
                                                      "video_snapshot", "video_summarization", "audio_asr")})
    with EmulatorThread(settings) as emu_thread:
        proc = _start(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", emu_thread.url,
                       "--config", str(cfg), "--progress", "off"])
        results = tmp_path / "r.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (results.exists() and results.stat().st_size > 200_000):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            _, err = proc.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the run did not end within 8 s of SIGTERM")
    assert proc.returncode == 3, err[-2000:]
    assert time.monotonic() - sent < 8
    assert "second SIGTERM" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_second_signal_right_after_the_first_still_exits_3(tmp_path: Path, emu_thread: EmulatorThread,
                                                             sig: signal.Signals) -> None:
    """A second signal at any moment after the first (while the run stops, as its loop closes, while the
    summary prints) exits 3: it exited 143/130/129 when it met the default action between the run's
    handlers going and the next ones coming. The gaps swept cover all three phases."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(120, ["image_analyze", "object_detection"]))
    for n, gap in enumerate((0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)):
        out = tmp_path / f"run{n}"
        proc = _start(["run", str(manifest), "--out", str(out / "r.jsonl"), "--endpoint", emu_thread.url,
                       "--progress", "off", "-q"])
        _wait_for(out / "r.jsonl.state", proc, lambda counts: sum(counts.values()) > 0)
        proc.send_signal(sig)
        time.sleep(gap)  # the gap between two signals is what this test varies, not a wait for a state
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, (gap, proc.returncode, err[-1500:])
