"""`touch FILE` in a folder catalog, against the emulator and its OSS on 127.0.0.1: a file whose
mtime moved but whose bytes are the same is unchanged when its SHA-256 is on record (an uploaded
file), so nothing is sent again (counted by the server); new bytes of the same size are changed;
without a recorded digest (sent inline) a touched file is still sent again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from catalog_support import BUCKET, folder, session
from run_support import config, emulator

from pipeline.config.sections import UploadConfig
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.emulator.oss_server import RunningOss

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator: the runs' key and time scale."""
    return emulator()


def touch(path: Path) -> None:
    """A new mtime, the same bytes (as `touch` does)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def counts(result) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    catalog = result.summary["catalog"]
    return catalog["new"], catalog["changed"], catalog["unchanged"]


async def test_a_touched_uploaded_file_is_unchanged_and_new_bytes_of_its_size_are_changed(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """Three uploaded images: a.png touched (same bytes) is unchanged and not sent, b.png rewritten
    with other bytes of the same size is changed and sent once, c.png untouched is unchanged; a
    second touch-free night sends nothing."""
    media = folder(tmp_path / "media", ["a.png", "b.png", "c.png"])
    cfg = config(emu, analyses_by_type={"image": ["object_detection"]},
                 upload=UploadConfig(endpoint=oss.url, bucket=BUCKET, always=True))
    first, n1 = await session(tmp_path, emu, media, cfg)
    assert (first.exit_code, n1) == (ExitCode.OK, 3), first.summary
    touch(media / "a.png")
    old = (media / "b.png").read_bytes()
    (media / "b.png").write_bytes(old[:-1] + b"X")  # same size, other bytes
    touch(media / "b.png")
    second, n2 = await session(tmp_path, emu, media, cfg)
    assert (second.exit_code, n2, counts(second)) == (ExitCode.OK, 1, (0, 1, 2)), second.summary
    third, n3 = await session(tmp_path, emu, media, cfg)
    assert (n3, counts(third)) == (0, (0, 0, 3))


async def test_a_touched_file_without_a_recorded_digest_is_sent_again(
        tmp_path: Path, emu: RunningEmulator) -> None:
    """Sent inline (no upload, so no digest on record), a touched image counts as changed and is
    sent again: size and mtime are all the checkpoint knows of its bytes."""
    media = folder(tmp_path / "media", ["a.png"])
    cfg = config(emu, analyses_by_type={"image": ["object_detection"]})
    await session(tmp_path, emu, media, cfg)
    touch(media / "a.png")
    second, n2 = await session(tmp_path, emu, media, cfg)
    assert (n2, counts(second)) == (1, (0, 1, 0))
