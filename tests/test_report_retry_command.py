"""The command the report shows to retry a run's failures: the run's source with its selection
(--include, --exclude), every path absolute (a folder run against the emulator on 127.0.0.1)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from run_support import emulator
from vanish_support import KEY, folder, folder_config

import pipeline
from pipeline.cli.report_data_of import retry_command
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.engine.item_source import Listing
from pipeline.engine.runner import RunRequest, run
from pipeline.state.checkpoint import Checkpoint

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's key and time scale)."""
    return emulator()


async def test_the_retry_command_keeps_the_selection_and_absolute_paths(
        tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of a folder with --include/--exclude, its state dir and config given relative: the
    retry command repeats the patterns and names every path absolutely."""
    monkeypatch.chdir(tmp_path)
    media = folder(tmp_path / "media", ["a.png", "raw/b.png"])
    cfg = folder_config(emu)
    result = await run(RunRequest(manifest="media", files=RunFiles(Path("out/results.jsonl"), Path("out/state")),
                                  api_key=KEY, config=cfg, listing=Listing(include=("*.png",), exclude=("raw/",))))
    assert result.exit_code == ExitCode.OK, result.summary
    ckpt = Checkpoint.open(Path("out/state"), read_only=True)
    try:
        command = retry_command(ckpt, Path("out/state"), cfg, config_file=Path("cfg.yaml"))
    finally:
        ckpt.close()
    assert command is not None
    args = shlex.split(command)
    assert args[args.index("--include") + 1] == "*.png" and args[args.index("--exclude") + 1] == "raw/"
    assert args[4] == str(media.resolve())
    for flag in ("--out", "--state-dir", "--config"):
        assert Path(args[args.index(flag) + 1]).is_absolute(), (flag, command)
    assert args[args.index("--state-dir") + 1] == str((tmp_path / "out" / "state").resolve())


async def test_a_streams_retry_advice_is_the_same_call_with_retry_failed(tmp_path: Path, emu: RunningEmulator) -> None:
    """A state dir written by `pipeline.stream`: the report's retry advice is that call again with
    retry_failed=True (its out absolute), not a `python -m pipeline run '<pipeline.stream>'` that cannot run."""
    cfg = folder_config(emu)
    out = tmp_path / "r.jsonl"
    rows = [{"id": "a", "capability": "object_detection", "url": "https://example.com/a.png"}]
    lines = pipeline.stream(rows, out=out, endpoint=emu.url, api_key=KEY, config=cfg)
    [_ async for _ in lines]
    assert lines.result is not None and lines.result.exit_code == ExitCode.OK
    ckpt = Checkpoint.open(tmp_path / "r.jsonl.state", read_only=True)
    try:
        command = retry_command(ckpt, tmp_path / "r.jsonl.state", cfg)
    finally:
        ckpt.close()
    assert command is not None and "pipeline run" not in command and "<pipeline.stream>" not in command
    assert command.startswith(f"pipeline.stream(items, out={str(out.resolve())!r}, retry_failed=True")
