"""The progress bar's total (a count of every manifest line) never holds up the run: not counted
when progress is off, counted off the event loop's thread when it is shown."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support import items, write_manifest

import pipeline.engine.watched as watched
from pipeline.config.load import Config
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.engine.runner import RunRequest
from pipeline.observe.progress import count_lines

KEY = "progress-total-key"


@pytest.mark.parametrize("progress", ["off", "plain"])
async def test_the_manifest_is_counted_only_for_shown_progress_and_off_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: str) -> None:
    """A run with progress off never counts the manifest's lines; with progress shown it counts
    them once, in a thread other than the event loop's."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(4, ["object_detection"]))
    counted: list[threading.Thread] = []

    def spy(path: str) -> int | None:
        counted.append(threading.current_thread())
        return count_lines(path)

    monkeypatch.setattr(watched, "count_lines", spy)
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=1, time_scale=50.0)) as emu:
        cfg = Config(endpoint=emu.url, time_scale=50.0, qps_headroom=0.9)
        result = await watched.watched_run(
            RunRequest(manifest=str(manifest), files=RunFiles.for_results(tmp_path / "r.jsonl"), api_key=KEY,
                       config=cfg), progress=progress, handle_signals=False)
    assert result.exit_code == ExitCode.OK
    loop_thread = threading.current_thread()
    if progress == "off":
        assert counted == []
    else:
        assert len(counted) == 1 and counted[0] is not loop_thread
