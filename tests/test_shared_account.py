"""Several processes on one account: with the Redis limiter they share the QPS budget (0 429s),
and they keep going, paced, when Redis or one of them dies. The memory limiter is the control."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_server import RedisServer, own_redis_server
from support import REPO, assert_exactly_once, cli_env, config_file, items, jobs_of, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread
from pipeline.state.shards import Shard

KEY = "shared-account-key-5d"
SCALE = 4.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
QUICK = {cap: (0.3, 0.8) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                      "video-summarization", "audio-asr")}

pytestmark = pytest.mark.slow
__all__ = ["own_redis_server"]  # the fixture, imported for pytest


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=6, time_scale=SCALE, durations=QUICK)


def start_shards(tmp: Path, manifest: Path, url: str, limiter: str, n: int = 3) -> list[subprocess.Popen[str]]:
    cfg = config_file(tmp / "cfg.yaml", polling={"first_delay": 1.0, "max_delay": 4.0})
    return [subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(manifest), "--out", str(tmp / "r.jsonl"), "--endpoint", url,
         "--config", str(cfg), "--limiter", limiter, "--shard", f"{k}/{n}", "--progress", "off"],
        cwd=REPO, env=cli_env(ENV), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(n)]


def all_lines(tmp: Path, n: int = 3) -> list[dict[str, object]]:
    return [line for k in range(n) for line in read_results(Shard(k, n).path(tmp / "r.jsonl"))]


@pytest.mark.timing
def test_three_processes_share_the_budget_through_redis(tmp_path: Path, emu_thread: EmulatorThread,
                                                          own_redis_server: RedisServer) -> None:
    """Three shards of one manifest on one account: with the Redis limiter the service never sees
    more than its limit (0 429s, busiest window within the limit) and every item has one line."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(90, ["object_detection", "image_analyze"]))
    procs = start_shards(tmp_path, manifest, emu_thread.url, own_redis_server.url)
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for e in errors]
    counters = emu_thread.counters()
    assert counters["throttled_total"] == 0, counters["throttled"]
    assert counters["max_window_offered"]["image-object-detection"] <= 20
    assert counters["max_window_offered"]["image-analyze"] <= 10
    assert_exactly_once(all_lines(tmp_path), jobs_of(manifest))


def test_without_redis_three_processes_overshoot(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """The control: the same three shards with the in-process limiter each pace to the whole
    limit, so together they offer the service more than it allows (and draw 429s)."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(90, ["object_detection", "image_analyze"]))
    procs = start_shards(tmp_path, manifest, emu_thread.url, "memory")
    for p in procs:
        p.communicate(timeout=120)
    counters = emu_thread.counters()
    assert counters["max_window_offered"]["image-object-detection"] > 20 or counters["throttled_total"] > 0
    assert_exactly_once(all_lines(tmp_path), jobs_of(manifest))


@pytest.mark.timing
def test_redis_lost_mid_run_degrades_and_finishes(tmp_path: Path, emu_thread: EmulatorThread,
                                                   own_redis_server: RedisServer) -> None:
    """Redis killed while three shards run: they log a warning, keep pacing on their own share of
    the limit, and finish every item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(300, ["object_detection"]))
    procs = start_shards(tmp_path, manifest, emu_thread.url, own_redis_server.url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and emu_thread.counters()["requests_total"] < 80:
        time.sleep(0.02)
    own_redis_server.kill()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for e in errors]
    assert all("redis" in e.lower() and "WARNING" in e for e in errors), [e[-800:] for e in errors]
    assert_exactly_once(all_lines(tmp_path), jobs_of(manifest))
    counters = emu_thread.counters()
    # Degraded pacing, not a storm: the switch itself can cost a few 429s (each one slows, never fails).
    assert counters["throttled_total"] <= 0.25 * counters["requests_total"], counters["throttled"]


@pytest.mark.timing
def test_kill_9_of_one_process_leaves_the_others_paced(tmp_path: Path, emu_thread: EmulatorThread,
                                                         own_redis_server: RedisServer) -> None:
    """kill -9 of one of three shards: the other two finish their items with no 429 (its booked
    slots simply go unused), and the killed shard's resume completes it."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(120, ["object_detection"]))
    procs = start_shards(tmp_path, manifest, emu_thread.url, own_redis_server.url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and emu_thread.counters()["requests_total"] < 20:
        time.sleep(0.02)
    procs[0].kill()
    procs[0].communicate(timeout=30)
    errors = [p.communicate(timeout=120)[1] for p in procs[1:]]
    assert [p.returncode for p in procs[1:]] == [0, 0], [e[-1500:] for e in errors]
    assert emu_thread.counters()["throttled_total"] == 0
    again = start_shards(tmp_path, manifest, emu_thread.url, own_redis_server.url, n=3)
    for p in again:
        p.communicate(timeout=120)
    assert [p.returncode for p in again] == [0, 0, 0]
    assert_exactly_once(all_lines(tmp_path), jobs_of(manifest))


def test_an_unreachable_redis_is_exit_2_before_anything(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """A limiter URL nobody answers: exit 2 naming the URL, no state dir, nothing sent."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3))
    cfg = config_file(tmp_path / "cfg.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(manifest), "--out", str(tmp_path / "r.jsonl"),
         "--endpoint", emu_thread.url, "--config", str(cfg), "--limiter", "redis://:s3cret@127.0.0.1:9/0"],
        cwd=REPO, env=cli_env(ENV), text=True, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "127.0.0.1:9" in done.stderr and "s3cret" not in done.stderr
    assert not (tmp_path / "r.jsonl.state").exists() and emu_thread.counters()["requests_total"] == 0
