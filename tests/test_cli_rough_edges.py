"""Rough edges a new user met on unhappy paths: messages that name the real problem and where the
value came from, output that cannot be written, an export cut short by its reader, and `status`
saying what a run would do when the results file no longer holds what the state dir records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, cli, cli_env, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "rough-edges-key-77d1"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
UNREACHABLE = "http://127.0.0.1:9"

pytestmark = pytest.mark.slow


def run_args(tmp: Path, manifest: Path, url: str, *extra: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    return ["run", str(manifest), "--out", str(tmp / "r.jsonl"), "--endpoint", url, "--config", str(cfg),
            "--progress", "off", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of 400 object detections (priced per request) in its own directory."""
    tmp = tmp_path_factory.mktemp("finished")
    manifest = write_manifest(tmp / "m.jsonl", items(400, ["object_detection"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=2, time_scale=SCALE)) as emu:
        done = cli(run_args(tmp, manifest, emu.url), env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp


def test_metrics_file_refusals_name_where_the_value_came_from_and_the_real_problem(tmp_path: Path) -> None:
    """--metrics-file inside the state dir is refused as such (before: "does not exist; create it
    first", inviting a path inside it), under a regular file as such (before: "does not exist"),
    each named by the flag (before: "(config metrics_file)"); from a config file, by its key and file."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    (tmp_path / "plain.txt").write_text("not a directory\n")
    cases = {
        str(tmp_path / "r.jsonl.state" / "x.prom"): "is in the state dir",
        str(tmp_path / "plain.txt" / "x.prom"): "which is not a directory",
        str(tmp_path / "m.jsonl"): "is the manifest itself",
    }
    for path, problem in cases.items():
        done = cli(run_args(tmp_path, manifest, UNREACHABLE, "--metrics-file", path), env=ENV)
        assert done.returncode == 2, done.stderr
        assert f"--metrics-file {path} " in done.stderr and problem in done.stderr, done.stderr
        assert "config metrics_file" not in done.stderr and "create it first" not in done.stderr
    cfg = config_file(tmp_path / "metrics.yaml", metrics_file=str(tmp_path / "m.jsonl"))
    done = cli(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", UNREACHABLE, "--config",
                str(cfg), "--progress", "off"], env=ENV)
    assert done.returncode == 2 and f"metrics_file in config file {cfg}" in done.stderr, done.stderr
    assert not (tmp_path / "r.jsonl.state").exists()


def test_a_cap_of_minus_zero_is_a_cap_of_0(tmp_path: Path) -> None:
    """`--max-cost -0` is shown as 0 everywhere (before: "--max-cost -0 CNY", "leaves -0.0000")."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    done = cli(run_args(tmp_path, manifest, UNREACHABLE, "--max-cost", "-0"), env=ENV)
    assert done.returncode == 6, done.stderr[-2000:]
    assert "--max-cost 0 CNY" in done.stderr and "-0" not in done.stderr, done.stderr


def test_an_empty_time_scale_is_unset(tmp_path: Path) -> None:
    """PIPELINE_TIME_SCALE='' means no time scale (before: exit 2, "must be a number, got ''")."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    done = cli(["validate", str(manifest)], env={"PIPELINE_TIME_SCALE": ""})
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_said_so(finished: Path) -> None:
    """validate, status and export with stdout on a full disk say the output could not be written
    (before: "run the same command again to resume"), without a traceback."""
    state = str(finished / "r.jsonl.state")
    for argv in (["validate", str(finished / "m.jsonl")], ["status", "--state-dir", state],
                 ["export", "--by-item", "--state-dir", state]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "pipeline", *argv], stdout=full, stderr=subprocess.PIPE,
                                  text=True, cwd=REPO, env=cli_env(), timeout=120, check=False)
        assert done.returncode == 3, (argv, done.stderr)
        assert "could not be written" in done.stderr and "the disk is full" in done.stderr, (argv, done.stderr)
        assert "resume" not in done.stderr and "Traceback" not in done.stderr, (argv, done.stderr)


def test_an_export_cut_short_by_its_reader_is_not_0(finished: Path) -> None:
    """`export | head -1`: the reader leaves after one line; the export exits non-zero (3), quietly,
    as a cut-short pipe should (before: 0, as if every item had been exported)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "export", "--by-item", "--state-dir",
                             str(finished / "r.jsonl.state")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, env=cli_env())
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # 400 items are far more than a pipe holds: the export is still writing
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert json.loads(first)["status"] == "SUCCESS"
    assert proc.returncode == 3, err
    assert err == "", err


def test_status_says_what_a_run_would_do_when_the_results_file_lost_lines(tmp_path: Path) -> None:
    """A finished run: status shows its settled spend though it ran without a cap (before: 0.0000).
    Its results file cut short: status exits 3 and says a resume polls the lost lines again; deleted:
    exit 2, saying a run would refuse (before: "completed (exit 0)" both times), as the run then does."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(5, ["object_detection"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=2, time_scale=SCALE)) as emu:
        assert cli(run_args(tmp_path, manifest, emu.url), env=ENV).returncode == 0
    state = tmp_path / "r.jsonl.state"

    def status() -> tuple[int, dict[str, object]]:
        done = cli(["status", "--state-dir", str(state), "--json"])
        return done.returncode, json.loads(done.stdout)

    code, report = status()
    assert code == 0 and report["outcome"] == "completed"
    spend = report["spend"]
    assert isinstance(spend, dict) and spend["settled"] == pytest.approx(5 * 0.002) == report["estimated_cost"]
    results = tmp_path / "r.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:2]))
    code, report = status()
    assert code == 3 and report["outcome"] == "stopped", report
    assert "shorter than the state dir records" in str(report["reason"])
    text = cli(["status", "--state-dir", str(state)])
    assert text.returncode == 3 and "a resume polls the recorded tasks of the lost lines again" in text.stdout
    results.unlink()
    code, report = status()
    assert code == 2 and "is missing" in str(report["reason"]) and "would refuse" in str(report["reason"])
    refused = cli(run_args(tmp_path, manifest, UNREACHABLE), env=ENV)
    assert refused.returncode == 2 and "is missing" in refused.stderr, refused.stderr[-2000:]
    # The cheap way back is named first: an empty file, and the recorded tasks are polled again.
    assert ": > FILE" in refused.stderr and ": > FILE" in str(report["reason"])
