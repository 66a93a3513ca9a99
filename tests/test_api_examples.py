"""The API's examples run as shipped: the plain script end to end against the emulator, and the
orchestrator module's `nightly_run` (Airflow and Dagster need not be installed to import it)."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest
from support import REPO, cli_env, items, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "examples-key-0b7e"
SCALE = 20.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE, durations=FAST)


def test_the_plain_script_runs_a_manifest_and_exits_with_the_run_code(tmp_path: Path,
                                                                      emu_thread: EmulatorThread) -> None:
    """examples/api_run.py, configured by the environment as the CLI is: exit 0 and one line per item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(4, ["image_analyze", "object_detection"]))
    out = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, str(REPO / "examples" / "api_run.py"), str(manifest), str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
                          env=cli_env({"DASHSCOPE_API_KEY": KEY, "PIPELINE_ENDPOINT": emu_thread.url,
                                       "PIPELINE_TIME_SCALE": str(SCALE)}))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed: 4 succeeded, 0 failed (exit 0)" in done.stdout
    assert len(read_results(out)) == 4


def test_the_plain_script_reports_a_refusal_with_its_exit_code(tmp_path: Path) -> None:
    """Without an API key the script prints why and exits 2, as the CLI would."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    done = subprocess.run([sys.executable, str(REPO / "examples" / "api_run.py"), str(manifest),
                           str(tmp_path / "r.jsonl")], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          check=False, env=cli_env({"PIPELINE_ENDPOINT": "http://127.0.0.1:9"}))
    assert done.returncode == 2 and "not started" in done.stderr and "DASHSCOPE_API_KEY" in done.stderr


def test_the_stream_script_loads_each_durable_line_and_resumes(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """examples/api_stream.py streams a file's items and loads one SQLite row per (item, analysis);
    run again, it sends nothing (the server's request count stays) and the table is unchanged."""
    rows = items(5, ["image_analyze", "object_detection"])
    source = write_manifest(tmp_path / "items.jsonl", rows)
    argv = [sys.executable, str(REPO / "examples" / "api_stream.py"), str(source), str(tmp_path / "r.jsonl"),
            str(tmp_path / "db.sqlite")]
    env = cli_env({"DASHSCOPE_API_KEY": KEY, "PIPELINE_ENDPOINT": emu_thread.url, "PIPELINE_TIME_SCALE": str(SCALE)})
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed: 5 succeeded, 0 failed (exit 0)" in done.stdout
    with closing(sqlite3.connect(tmp_path / "db.sqlite")) as db:
        loaded = sorted(db.execute("SELECT id, status FROM results"))
    assert loaded == sorted((r["id"], "SUCCESS") for r in rows)
    requests = emu_thread.counters()["requests_total"]
    again = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False, env=env)
    assert again.returncode == 0 and emu_thread.counters()["requests_total"] == requests, again.stderr[-2000:]
    with closing(sqlite3.connect(tmp_path / "db.sqlite")) as db:
        assert sorted(db.execute("SELECT id, status FROM results")) == loaded


def test_the_stream_script_reads_the_sample_catalog_with_its_comments(tmp_path: Path,
                                                                      emu_thread: EmulatorThread) -> None:
    """examples/api_stream.py on the shipped sample_manifests/catalog.jsonl (`#` comment lines,
    one deliberately invalid item) runs to its end: no traceback, one row per valid item's line."""
    catalog = REPO / "sample_manifests" / "catalog.jsonl"
    argv = [sys.executable, str(REPO / "examples" / "api_stream.py"), str(catalog), str(tmp_path / "r.jsonl"),
            str(tmp_path / "db.sqlite")]
    env = cli_env({"DASHSCOPE_API_KEY": KEY, "PIPELINE_ENDPOINT": emu_thread.url, "PIPELINE_TIME_SCALE": str(SCALE)})
    done = subprocess.run(argv, capture_output=True, text=True, cwd=catalog.parent, timeout=180, check=False,
                          env=env)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 1 and "(exit 1)" in done.stdout, (done.stdout, done.stderr[-2000:])
    written = read_results(tmp_path / "r.jsonl")
    with closing(sqlite3.connect(tmp_path / "db.sqlite")) as db:
        loaded = sorted(db.execute("SELECT id, analysis FROM results"))
    assert written and loaded == sorted((r["id"], r["analysis"]) for r in written)
    assert "broken-no-output" not in {row[0] for row in loaded}


def load_orchestrators() -> ModuleType:
    spec = importlib.util.spec_from_file_location("orchestrators_example", REPO / "examples" / "orchestrators.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_orchestrator_function_appends_the_days_items(tmp_path: Path, emu_thread: EmulatorThread,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """nightly_run: day one's manifest, then day two's joins the same results file (append)."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("PIPELINE_ENDPOINT", emu_thread.url)
    monkeypatch.setenv("PIPELINE_TIME_SCALE", str(SCALE))
    example = load_orchestrators()
    rows = items(6, ["object_detection"])
    out = tmp_path / "results.jsonl"
    first = example.nightly_run(str(write_manifest(tmp_path / "day1.jsonl", rows[:3])), str(out))
    second = example.nightly_run(str(write_manifest(tmp_path / "day2.jsonl", rows[3:])), str(out))
    assert (first["succeeded"], second["succeeded"]) == (3, 6)  # the whole run's figures
    assert sorted(r["id"] for r in read_results(out)) == [r["id"] for r in rows]


def test_the_orchestrator_function_raises_needs_a_person_for_a_refusal(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal a retry cannot fix (here a bad spend cap) is NeedsAPerson, carrying the exit code."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("PIPELINE_ENDPOINT", "http://127.0.0.1:9")
    example = load_orchestrators()
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    with pytest.raises(example.NeedsAPerson, match="exit 2"):
        example.nightly_run(str(manifest), str(tmp_path / "r.jsonl"), max_cost=-1)
