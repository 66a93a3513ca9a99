"""A catalog night interrupted and resumed, against the emulator on 127.0.0.1: the interrupted
session and its resume are one run to `export --changes` (its default holds the lines of both),
and the resume of an interrupted `--force` run never forces again what that run re-did already
(counted by the server)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from run_support import KEY, config, current, emulator
from support import write_manifest

from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import Stop, StopReason
from pipeline.core.results import ResultLine, RunFiles
from pipeline.emulator import RunningEmulator, start_emulator
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.engine.stopping import Stopping

N = 8


pytestmark = pytest.mark.usefixtures("no_pipeline_env")


def image(i: int, url: str = "p") -> dict[str, Any]:
    return {"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/{url}{i}.jpg"}


def sent(emu: RunningEmulator) -> int:
    """Creates the emulator accepted so far."""
    return sum(emu.counters()["submissions"].values())


async def session(tmp: Path, emu: RunningEmulator, manifest: Path, *, stop_after: int | None = None,
                  **request: Any) -> tuple[RunResult, int, list[str]]:
    """One run of `manifest`, interrupted (as Ctrl-C does) once `stop_after` lines are durable;
    (its result, the creates the server accepted meanwhile, the ids of the lines it wrote)."""
    before = sent(emu)
    stops = Stopping()
    written: list[str] = []

    def on_line(line: ResultLine) -> None:
        written.append(line.id)
        if stop_after is not None and len(written) >= stop_after:
            stops.request(Stop(StopReason.INTERRUPTED, "interrupted by the test"))

    result = await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                  api_key=KEY, config=config(emu), **request), on_line=on_line, stops=stops)
    return result, sent(emu) - before, written


def export_changes(tmp: Path) -> list[dict[str, Any]]:
    from pipeline.cli.main import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["export", "--changes", "--state-dir", str(tmp / "state")]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_changes_of_a_night_interrupted_and_resumed_hold_both_sessions_lines(tmp_path: Path) -> None:
    """Night 2 changes every item, is interrupted after 2 lines and resumed to its end: the
    default `export --changes` holds all of night 2's lines, those the interrupted session wrote
    too, and none of night 1's."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(N)])
    async with start_emulator(emulator()) as emu:
        first, _, _ = await session(tmp_path, emu, manifest)
        assert first.exit_code == ExitCode.OK
        write_manifest(manifest, [image(i, url="changed") for i in range(N)])
        stopped, _, early = await session(tmp_path, emu, manifest, stop_after=2)
        assert stopped.exit_code == ExitCode.INTERRUPTED and early, stopped.summary
        resumed, _, _ = await session(tmp_path, emu, manifest)
    assert resumed.exit_code == ExitCode.OK, resumed.summary
    changes = export_changes(tmp_path)
    assert sorted(line["id"] for line in changes) == sorted(f"img-{i}" for i in range(N))
    assert all("changed" in line["source"] for line in changes)
    assert set(early) <= {line["id"] for line in changes}


async def test_the_resume_of_an_interrupted_force_run_sends_each_item_once(tmp_path: Path) -> None:
    """`--force` interrupted after 3 lines, then the same command again: the server accepts one
    create per item over both sessions (what the first re-did is not forced again), and every
    item's current line is the forced run's."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(N)])
    async with start_emulator(emulator()) as emu:
        first, n1, _ = await session(tmp_path, emu, manifest)
        assert (first.exit_code, n1) == (ExitCode.OK, N)
        before = {key: line["task_id"] for key, line in current(tmp_path).items()}
        stopped, n2, early = await session(tmp_path, emu, manifest, force=True, stop_after=3)
        assert stopped.exit_code == ExitCode.INTERRUPTED and len(early) >= 3, stopped.summary
        resumed, n3, _ = await session(tmp_path, emu, manifest, force=True)
        _, n4, _ = await session(tmp_path, emu, manifest, force=True)
    assert resumed.exit_code == ExitCode.OK, resumed.summary
    assert n2 + n3 == N, (n2, n3)  # each item forced once in all
    after = current(tmp_path)
    assert len(after) == N and all(after[key]["task_id"] != task for key, task in before.items())
    assert n4 == N  # a forced run begun after a finished one forces everything again
