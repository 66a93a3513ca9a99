"""A folder catalog run with follow_symlinks against the emulator on 127.0.0.1: a followed link
whose target is gone (a failed mount) is an unreadable part of the folder, not a removal."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from catalog_support import counts, folder, folder_config, session
from run_support import current, emulator

from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.engine.item_source import Listing

FOLLOW = Listing(follow_symlinks=True)

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's time scale, its key)."""
    return emulator()


async def test_a_dangling_followed_link_is_warned_and_nothing_behind_it_vanishes(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """With follow_symlinks, a link to a directory and a link to a file whose targets are gone on
    night 2 are each warned (naming the link) and named in the listing's unreadable: nothing is
    marked vanished, and the items behind them keep their last results."""
    nas = folder(tmp_path / "nas", ["photos/p1.png", "photos/p2.png", "photos/p3.png", "cover.png"])
    media = folder(tmp_path / "sd", ["keep.png"])
    (media / "photos").symlink_to(nas / "photos", target_is_directory=True)
    (media / "cover.png").symlink_to(nas / "cover.png")
    cfg = folder_config(emu)
    first, n1 = await session(tmp_path, emu, media, cfg, listing=FOLLOW)
    assert (first.exit_code, n1) == (ExitCode.OK, 5), first.summary
    nas.rename(tmp_path / "nas.gone")  # the mount failed: both links now point at nothing
    with caplog.at_level(logging.WARNING):
        second, n2 = await session(tmp_path, emu, media, cfg, listing=FOLLOW)
    assert (second.exit_code, n2) == (ExitCode.OK, 0), second.summary
    assert second.summary["catalog"]["listing"]["unreadable"] == ["cover.png", "photos"]
    assert counts(second) == (0, 0, 1, 0)
    assert not second.summary["catalog"]["decided_vanished"]
    warned = [r.getMessage() for r in caplog.records if "target cannot be reached" in r.getMessage()]
    assert [m.split(" -> ")[0] for m in warned] == ["symbolic link cover.png", "symbolic link photos"], warned
    assert {i for i, _ in current(tmp_path)} == {"cover.png", "keep.png", "photos/p1.png", "photos/p2.png",
                                                 "photos/p3.png"}
