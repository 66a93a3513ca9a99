"""`export --changes --since-run N` takes a run the state dir has (0 to the last), else exit 2
naming the runs there are (a state dir of runs against the emulator on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_support import config, emulator
from support import write_manifest
from vanish_support import image, session

from pipeline.cli.main import main
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's key and time scale)."""
    return emulator()


async def test_export_changes_since_a_run_that_does_not_exist_is_exit_2(
        tmp_path: Path, emu: RunningEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """`--since-run 99` and `--since-run -1` on a state dir of two runs: exit 2, naming runs 1 to 2;
    0 and 2 are accepted."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(0)])
    for _ in range(2):
        await session(tmp_path, emu, manifest, config(emu))
    base = ["export", "--changes", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "d.jsonl")]
    for bad in ("99", "-1"):
        capsys.readouterr()
        assert main([*base, "--since-run", bad]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert f"--since-run {bad}" in err and "runs 1 to 2" in err, err
    assert main([*base, "--since-run", "0"]) == ExitCode.OK
    assert main([*base, "--since-run", "2"]) == ExitCode.OK
