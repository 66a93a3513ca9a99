"""Read-only commands on a state dir an earlier version wrote (its jobs table without the
catalog's columns): `validate --state-dir` and `export --changes` say how to upgrade it (exit 2),
never that the disk is full; SQLite's errors are called a full disk only when they are one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from catalog_support import image, to_layout_before_catalog
from support import write_manifest

from pipeline.cli.main import main, sqlite_failure
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "upgrade-test-key"


pytestmark = pytest.mark.usefixtures("no_pipeline_env")


def test_read_only_commands_on_an_earlier_versions_state_dir_say_to_upgrade_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """validate --state-dir and export --changes of a state dir without the fingerprint column
    exit 2 saying to run it once to upgrade it (no "disk" in the message); after one run, both work."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("PIPELINE_REPORT", "off")  # the report is drawn by its own tests
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    state = str(tmp_path / "state")
    with EmulatorThread(EmulatorSettings(api_key=KEY, time_scale=50.0)) as emu:
        run = ["run", str(manifest), "--out", str(tmp_path / "results.jsonl"), "--state-dir", state,
               "--endpoint", emu.url, "--progress", "off", "--quiet"]
        assert main(run) == ExitCode.OK
        to_layout_before_catalog(tmp_path / "state")
        capsys.readouterr()
        for argv in (["validate", str(manifest), "--state-dir", state],
                     ["export", "--changes", "--state-dir", state]):
            assert main(argv) == ExitCode.USAGE, argv
            err = capsys.readouterr().err
            assert "written by an earlier version" in err and "upgrade" in err and "disk" not in err, err
        assert main(["export", "--state-dir", state]) == ExitCode.OK  # the current view needs no new column
        assert main(run) == ExitCode.OK and emu.counters()["submissions"] and \
            sum(emu.counters()["submissions"].values()) == 3  # the upgrading run sent nothing again
    capsys.readouterr()
    assert main(["validate", str(manifest), "--state-dir", state]) == ExitCode.OK
    assert main(["export", "--changes", "--state-dir", state]) == ExitCode.OK


@pytest.mark.parametrize(("error", "code", "disk"), [
    ("database or disk is full", ExitCode.INTERRUPTED, True),
    ("disk I/O error", ExitCode.INTERRUPTED, True),
    ("no such column: fingerprint", ExitCode.USAGE, False),
    ("no such table: sessions", ExitCode.USAGE, False),
    ("database is locked", ExitCode.INTERRUPTED, False),
])
def test_sqlite_errors_are_called_a_full_disk_only_when_they_are_one(error: str, code: ExitCode, disk: bool) -> None:
    """The message says the disk is full or failing only for SQLite's disk errors; a missing
    column is an earlier version's state dir (exit 2); anything else is said as it is."""
    message, got = sqlite_failure(sqlite3.OperationalError(error))
    assert got == code and ("disk is full" in message) == disk and error in message
