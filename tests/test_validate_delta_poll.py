"""`validate --state-dir` after a kill left tasks recorded: what a run would *send* leaves out the
tasks the service already accepted (a run polls them), and says how many it would poll."""

from __future__ import annotations

from pathlib import Path

from support import write_manifest

from pipeline.cli.validate_delta import delta_report, format_delta
from pipeline.config.load import Config
from pipeline.core.job import job_key
from pipeline.state.checkpoint import Checkpoint


def test_recorded_tasks_are_polled_not_counted_as_sends(tmp_path: Path) -> None:
    """Four items, one with its task recorded (a kill after the service accepted it): a run would
    send three and poll one, as `run` then does."""
    items = [{"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/{i}.jpg"}
             for i in range(4)]
    manifest = write_manifest(tmp_path / "m.jsonl", items)
    ckpt = Checkpoint.open(tmp_path / "state")
    try:
        ckpt.record_submitted(job_key("img-3", "image_analyze"), "image_analyze", "ops-image-analyze-ocr-001",
                              "task-3", attempts=1)
    finally:
        ckpt.close()
    report = delta_report(str(manifest), Config(), state_dir=tmp_path / "state")
    assert (report["to_send"], report["to_poll"]) == (3, 1), report
    assert "a run would send 3 (and poll 1 tasks already sent)" in format_delta(report)
