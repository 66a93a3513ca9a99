"""What the end-to-end engine tests share: the emulator's settings, the run's config and one
run against it, and the current lines a run left (tests/test_engine.py, tests/test_analyses_run.py,
tests/test_catalog_*.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config.load import Config
from pipeline.core.backoff import PollPolicy
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.state.checkpoint import Checkpoint

KEY = "engine-test-key"
SCALE = 10.0
SHORT = {cap: (0.5, 2.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                      "video-summarization", "audio-asr")}


def emulator(**overrides: Any) -> EmulatorSettings:
    base = dict(api_key=KEY, seed=11, time_scale=SCALE, durations=SHORT)
    base.update(overrides)
    return EmulatorSettings(**base)


def config(emu: RunningEmulator, **overrides: Any) -> Config:
    # Headroom 0.9: at time scale 10 the emulator's window is 100 ms, so scheduling jitter of a
    # few ms matters ten times more than against the real service.
    base: dict[str, Any] = dict(endpoint=emu.url, time_scale=SCALE, qps_headroom=0.9,
                                polling=PollPolicy(first_delay=1.0, max_delay=5.0, timeout=600.0))
    base.update(overrides)
    return Config(**base)


async def run_once(tmp: Path, manifest: Path, cfg: Config, *, key: str = KEY,
                   retry_failed: bool = False) -> RunResult:
    request = RunRequest(manifest=str(manifest), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                         api_key=key, config=cfg, retry_failed=retry_failed)
    return await run(request)


def current(tmp: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The current line of every live (item, analysis), read where the checkpoint points."""
    ckpt = Checkpoint.open(tmp / "state", read_only=True)
    try:
        lines = {}
        with open(tmp / "results.jsonl", "rb") as f:
            for _key, at in ckpt.done_lines():
                f.seek(at)
                line = json.loads(f.readline())
                lines[(line["id"], line["analysis"])] = line
        return lines
    finally:
        ckpt.close()
