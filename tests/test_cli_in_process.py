"""The command line called in-process (as a program embedding it, or a test, does): a run leaves the
caller's signals as it found them, and a failing disk is one line and exit 3, never a traceback.

A run called inside another program (a test, a notebook, a scheduler) leaves that program's
signals as it found them: the same handlers, nothing blocked. The command line's exit-3 handling
and the hold on signals while the process ends belong to the process entry alone; a blocked
SIGTERM would be inherited by every child the program starts, which then ignores `kill`."""

from __future__ import annotations

import signal
from pathlib import Path

from support import items, write_manifest

from pipeline.cli.main import main
from pipeline.config.load import Config
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, EmulatorThread, start_emulator
from pipeline.engine.runner import RunRequest, run
from pipeline.engine.shutdown import SIGNALS

KEY = "in-process-key-41"


def signal_state() -> tuple[set[int], dict[int, object]]:
    return signal.pthread_sigmask(signal.SIG_BLOCK, []), {sig: signal.getsignal(sig) for sig in SIGNALS}


def test_the_command_line_called_in_process_gives_the_signals_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    manifest = write_manifest(tmp_path / "m.jsonl", items(4, ["image_analyze"]))
    before = signal_state()
    with EmulatorThread(EmulatorSettings(api_key=KEY, time_scale=50.0)) as emu:
        code = main(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", emu.url,
                     "--progress", "off", "--quiet"])
    assert code == ExitCode.OK
    assert signal_state() == before


async def test_a_run_in_the_callers_loop_gives_the_signals_back(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["image_analyze"]))
    before = signal_state()
    async with start_emulator(EmulatorSettings(api_key=KEY, time_scale=50.0)) as emu:
        result = await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp_path / "r.jsonl", tmp_path / "s"),
                                      api_key=KEY, config=Config(endpoint=emu.url, time_scale=50.0)))
    assert result.exit_code == ExitCode.OK
    assert signal_state() == before


def test_a_full_disk_under_the_checkpoint_is_exit_3_in_one_line(tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    """SQLite's "database or disk is full" while the run marks lines done ended in a traceback and
    exit 1 ("finished with failures"), though status said 3: now one line naming the checkpoint,
    exit 3, and the same command finishes once there is room."""
    import sqlite3

    from pipeline.state.checkpoint import Checkpoint

    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    manifest = write_manifest(tmp_path / "m.jsonl", items(6, ["image_analyze"]))
    argv = ["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--progress", "off", "--quiet"]
    real = Checkpoint.mark_done

    def full(self: Checkpoint, *args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    with EmulatorThread(EmulatorSettings(api_key=KEY, time_scale=50.0)) as emu:
        monkeypatch.setattr(Checkpoint, "mark_done", full)
        assert main([*argv, "--endpoint", emu.url]) == ExitCode.INTERRUPTED
        err = capsys.readouterr().err
        assert "Traceback" not in err and "database or disk is full" in err and "checkpoint" in err
        assert len([line for line in err.splitlines() if "ERROR" in line]) == 1, err
        monkeypatch.setattr(Checkpoint, "mark_done", real)
        assert main([*argv, "--endpoint", emu.url]) == ExitCode.OK
