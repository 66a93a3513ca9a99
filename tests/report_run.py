"""A real run against the emulator for the report's browser test, its size figures and the
README's screenshot: 300 mixed items (every capability), a few failed tasks and 429 bursts, run
through the command line like a user's, so its report is what `run` writes."""

from __future__ import annotations

from pathlib import Path

from support import cli, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings

KEY = "report-run-key-41c2"
SCALE = 10.0
#: Emulated seconds per task: image tasks quick, video and audio up to a minute.
DURATIONS = {"image-analyze": (0.5, 4.0), "video-segmentation": (5.0, 60.0), "video-snapshot": (2.0, 30.0),
             "video-summarization": (5.0, 60.0), "audio-asr": (3.0, 45.0)}


def real_run(folder: Path, n: int = 300) -> Path:
    """Run `n` mixed items into `folder` (exit 1: some tasks fail); its results.report.html."""
    settings = EmulatorSettings(api_key=KEY, seed=11, time_scale=SCALE, durations=DURATIONS,
                                faults=FaultSettings(task_fail_rate=0.03, burst_429_rate=0.01))
    cfg = config_file(folder / "cfg.yaml", qps_headroom=0.9)
    manifest = write_manifest(folder / "catalog.jsonl", items(n))
    with EmulatorThread(settings) as emu:
        done = cli(["run", str(manifest), "--out", str(folder / "results.jsonl"), "--endpoint", emu.url,
                    "--config", str(cfg)],
                   env={"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE), "PIPELINE_REPORT": "on"},
                   timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    return folder / "results.report.html"
