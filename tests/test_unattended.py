"""Unattended runs through the command line: pings and metrics reach their targets with the run's
exit code, bad guardrail flags are refused before anything starts, and a capped run survives kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, assert_exactly_once, cli, cli_env, config_file, items, jobs_of, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "unattended-key-41c2"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}

pytestmark = pytest.mark.slow


class Pings:
    """A local Healthchecks stand-in: records the path of every request, in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        pings = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pings.paths.append(self.path.split("?")[0])
                self.send_response(200)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def pings() -> Iterator[Pings]:
    server = Pings()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=4, time_scale=SCALE)


def run_args(tmp: Path, manifest: Path, url: str, *extra: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    return ["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", url, "--config", str(cfg),
            "--progress", "off", *extra]


def test_pings_and_metrics_carry_the_runs_outcome(tmp_path: Path, emu_thread: EmulatorThread, pings: Pings) -> None:
    """A clean run pings start then success, and its metrics file parses with prometheus-client's own
    parser, carries the summary's figures and a last-success time; a run refused by the service
    (wrong key) pings /4 and keeps the last-success time of the earlier run."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(12))
    metrics = tmp_path / "pipeline.prom"
    args = run_args(tmp_path, manifest, emu_thread.url, "--metrics-file", str(metrics), "--ping-url", pings.url)
    done = cli(args, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pings.paths == ["/ping/abc/start", "/ping/abc"]
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    succeeded = sum(s.value for s in families["media_pipeline_items"].samples if s.labels["status"] == "succeeded")
    assert succeeded == json.loads((tmp_path / "results.summary.json").read_text())["succeeded"] == 12
    last_success = families["media_pipeline_last_success_timestamp_seconds"].samples[0].value
    assert last_success > 0
    (tmp_path / "again").mkdir()
    bad = cli(run_args(tmp_path / "again", manifest, emu_thread.url, "--metrics-file", str(metrics),
                       "--ping-url", pings.url), env={**ENV, "DASHSCOPE_API_KEY": "wrong-key"})
    assert bad.returncode == 4, bad.stderr[-2000:]
    assert pings.paths[2:] == ["/ping/abc/start", "/ping/abc/4"]
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["media_pipeline_last_success_timestamp_seconds"].samples[0].value == last_success
    assert families["media_pipeline_exit_code"].samples[0].value == 4


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--max-cost", "-1", "max_cost"),
    ("--max-cost", "lots", "--max-cost"),
    ("--max-duration", "6x", "--max-duration"),
    ("--metrics-file", "/nonexistent-dir/m.prom", "--metrics-file"),
    ("--ping-url", "ftp://example.com/p", "--ping-url"),
])
def test_bad_guardrail_flags_exit_2_before_anything_starts(tmp_path: Path, flag: str, value: str,
                                                            named: str) -> None:
    """A negative or non-numeric cap, an unparseable duration, a metrics path in a missing directory
    or a ping URL that is not http(s): exit 2 naming the flag, and no state dir is created."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1))
    done = cli(run_args(tmp_path, manifest, "http://127.0.0.1:9", flag, value), env=ENV)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results.jsonl.state").exists()


def test_kill_9_during_a_capped_run_never_passes_the_cap(tmp_path: Path) -> None:
    """kill -9 in the middle of a capped run, then the same command: the ledger never holds more than
    the cap (settled + reserved), the run stops with exit 6; a higher cap then finishes every item
    once without a duplicate submission."""
    slow = {"video-snapshot": (3.0, 6.0)}
    manifest = write_manifest(tmp_path / "m.jsonl", items(40, ["video_snapshot"]))  # 0.002 CNY each
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=4, time_scale=SCALE, durations=slow)) as emu_thread:
        args = run_args(tmp_path, manifest, emu_thread.url, "--max-cost", "0.04")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=cli_env(ENV), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        state = tmp_path / "results.jsonl.state"
        while time.monotonic() < deadline and proc.poll() is None:
            probe = cli(["status", "--state-dir", str(state), "--json"]) if (state / "checkpoint.sqlite3").exists() \
                else None
            if probe is not None and probe.returncode == 7 and json.loads(probe.stdout)["in_flight_total"] >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        # Creates the service accepted whose task id the killed process never recorded: the only
        # ones a resume may send again (invariant 2: at most the submits that were on the wire).
        unrecorded = emu_thread.counters()["tasks_created_total"] - recorded_tasks(state)
        resumed = cli(args, env=ENV)
        assert resumed.returncode == 6, resumed.stderr[-2000:]
        report = json.loads(cli(["status", "--state-dir", str(state), "--json", "--config",
                                 str(tmp_path / "cfg.yaml")]).stdout)
        assert report["spend"]["settled"] + report["spend"]["reserved"] <= 0.04 + 1e-9
        raised = cli(run_args(tmp_path, manifest, emu_thread.url, "--max-cost", "1"), env=ENV)
        counters = emu_thread.counters()
    assert raised.returncode == 0, raised.stderr[-2000:]
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))
    assert counters["duplicate_submissions"] <= unrecorded, (counters["duplicate_submissions"], unrecorded)


def recorded_tasks(state_dir: Path) -> int:
    """How many task ids a run's checkpoint holds (in flight or finished)."""
    with sqlite3.connect(f"file:{state_dir / 'checkpoint.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs WHERE task_id IS NOT NULL").fetchone()[0])


def test_creates_on_the_wire_at_a_kill_count_as_possibly_billed(tmp_path: Path) -> None:
    """kill -9 while creates are on the wire (reserved, no task id recorded): the resume sends them
    again, so each counts as a possible double billing and what it reserved stays spent under the
    cap. Before, those reservations were released as never sent: the summary said 0, and a resume
    could let the service bill past the cap."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(30, ["image_analyze"]))  # 0.001 CNY each
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=4, time_scale=SCALE)) as emu_thread:
        emu_thread.update_faults(slow_rate=1.0, slow_seconds=100_000.0, routes=("image-analyze:create",))
        args = run_args(tmp_path, manifest, emu_thread.url, "--max-cost", "0.02")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=cli_env(ENV), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None \
                and emu_thread.counters()["faults"]["slow"] < 3:
            time.sleep(0.02)
        on_the_wire = emu_thread.counters()["faults"]["slow"]
        assert on_the_wire >= 3, (proc.poll(), emu_thread.counters()["faults"])
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        emu_thread.update_faults(slow_rate=0.0, routes=())
        resumed = cli(args, env=ENV)
    assert resumed.returncode in (0, 6), resumed.stderr[-2000:]
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["possible_double_billing"] >= 3, summary["possible_double_billing"]
    assert "may have reached the service before it was killed" in resumed.stderr
    spend = summary["spend"]
    assert spend["settled"] + spend["reserved"] <= 0.02 + 1e-9 and spend["settled"] >= 0.003, spend
