"""Requests that got no answer (a connection dropped after the service processed them) count as
requests, and the creates sent again after one count as possible double billing, in the summary
printed and written, in `status`, and over every session of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import cli, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings

KEY = "unanswered-key-3c"
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "10"}

pytestmark = pytest.mark.slow


def test_dropped_answers_count_as_requests_and_possible_double_billing_is_kept(tmp_path: Path) -> None:
    """Three detections whose answers are always dropped after processing: 6 requests (each sent twice,
    ambiguous_creates 1), 3 retries and 3 possible double billings in the summary, the printed summary and
    status; a second session on the same run adds its own instead of starting from zero."""
    settings = EmulatorSettings(api_key=KEY, time_scale=10.0, faults=FaultSettings(
        drop_rate=1.0, drop_after_processing=True, routes=("image-object-detection",)))
    with EmulatorThread(settings) as emu:
        manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["object_detection"]))
        args = ["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", emu.url, "--progress", "off"]
        first = cli(args, env=ENV)
        assert first.returncode == 1, first.stderr[-2000:]
        summary = json.loads((tmp_path / "r.summary.json").read_text())
        detection = summary["capabilities"]["object_detection"]
        assert (detection["requests"], detection["retries"]) == (6, 3)
        assert emu.counters()["requests_total"] >= 6
        assert summary["possible_double_billing"] == 3
        assert "possible double billing: 3 creates" in first.stderr
        status = cli(["status", "--state-dir", str(tmp_path / "r.jsonl.state"), "--json"])
        assert json.loads(status.stdout)["possible_double_billing"] == 3
        again = cli([*args, "--retry-failed"], env=ENV)
        assert again.returncode == 1, again.stderr[-2000:]
    assert json.loads((tmp_path / "r.summary.json").read_text())["possible_double_billing"] == 6
