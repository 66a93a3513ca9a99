"""What the catalog tests of vanished, `--since-run` and the retry command share (tests/test_catalog_vanish.py,
tests/test_export_since_run.py, tests/test_report_retry_command.py): one run of a source against the emulator,
a folder of images, a manifest item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from run_support import config

from pipeline.config.load import Config
from pipeline.core.results import RunFiles
from pipeline.emulator import RunningEmulator
from pipeline.engine.runner import RunRequest, RunResult, run

KEY = "engine-test-key"


async def session(tmp: Path, emu: RunningEmulator, source: Path | str, cfg: Config, **request: Any) -> RunResult:
    """One run of `source` into tmp's results file and state dir."""
    return await run(RunRequest(manifest=str(source), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                api_key=KEY, config=cfg, **request))


def folder(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG " + name.encode())
    return root


def folder_config(emu: RunningEmulator) -> Config:
    return config(emu, analyses_by_type={"image": ["object_detection"]})


def image(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"img-{n}", "capability": "image_analyze", "url": f"https://example.com/{n}.jpg", **extra}
