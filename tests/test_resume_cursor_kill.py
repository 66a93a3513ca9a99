"""kill -9 at random points of resumes that skipped ahead (issue 21): the CLI in a subprocess
against the emulator on 127.0.0.1; the last resume still finishes every item exactly once."""

from __future__ import annotations

import random
import subprocess
import sys
import time
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

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "cursor-kill-key-31c9"
SCALE = 20.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
ITEMS = 1800  # more than three batches of the reader (512 units): positions are committed on the way

pytestmark = pytest.mark.slow


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    durations = {cap: (0.5, 2.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                              "video-summarization", "audio-asr")}
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=durations)


def _done(state_dir: Path) -> int:
    return sum(n for counts in checkpoint_counts(state_dir).values() for key, n in counts.items()
               if key in ("SUCCESS", "FAILED"))


def test_kill_9_during_resumes_that_skipped_ahead(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """Killed at random moments, each resume after the first reads on from the recorded
    position (it says so); the final one ends with one line per item and every body sent."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(ITEMS))
    cfg = config_file(tmp_path / "cfg.yaml", submit_workers=2, polling={"first_delay": 0.5, "max_delay": 2.0})
    args = ["run", str(manifest), "--out", str(tmp_path / "out" / "results.jsonl"), "--state-dir",
            str(tmp_path / "state"), "--endpoint", emu_thread.url, "--config", str(cfg)]
    rng = random.Random(7)
    skipped = kills = 0
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, text=True, env=cli_env(ENV),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        target = (round_ + 1) * 350 + rng.randint(0, 100)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and _done(tmp_path / "state") < target:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        _, err = proc.communicate(timeout=60)
        skipped += "reading on from there" in err
    final = cli(args, env=ENV, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    skipped += "reading on from there" in final.stderr
    assert_exactly_once(read_results(tmp_path / "out" / "results.jsonl"), jobs_of(manifest))
    counters = emu_thread.counters()
    assert len(counters["submissions"]) == ITEMS  # every item's body reached the service
    assert counters["duplicate_submissions"] <= kills * 2 * 6
    assert kills >= 2 and skipped >= 2, (kills, skipped)
