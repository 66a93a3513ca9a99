"""What the vanished, `--since-run` and retry-command tests share (tests/test_catalog_vanish.py,
tests/test_export_since_run.py, tests/test_report_retry_command.py): `catalog_support`'s folder,
config and item, and one run of a source that returns its result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog_support import KEY, folder, folder_config, image
from catalog_support import session as counted_session

from pipeline.config.load import Config
from pipeline.emulator import RunningEmulator
from pipeline.engine.runner import RunResult

__all__ = ["KEY", "folder", "folder_config", "image", "session"]


async def session(tmp: Path, emu: RunningEmulator, source: Path | str, cfg: Config, **request: Any) -> RunResult:
    """One run of `source` into tmp's results file and state dir."""
    result, _ = await counted_session(tmp, emu, source, cfg, **request)
    return result
