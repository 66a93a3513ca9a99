"""A recorded upload is reused only while the local file is unchanged: size and mtime are checked
every time the record is reused, the file is hashed again when they moved, and its new bytes are
uploaded and sent (issue 18, bug 11: `--retry-failed` processed the old 9 MB object of a file
that had become 12 MB)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import read_results, write_manifest

import pipeline.upload.transfer
from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, FaultSettings, start_emulator
from pipeline.emulator.oss import DEFAULT_OSS_KEY_ID, DEFAULT_OSS_KEY_SECRET, OssSettings
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.state.checkpoint import Checkpoint
from pipeline.upload.files import FileStamp
from pipeline.upload.transfer import UploadedObject

KEY = "changed-file-key-51"
MB = 1000 * 1000  # the figures: 9,000,000 bytes, then 12,000,000
SCALE = 20.0


@pytest.fixture
def oss_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", DEFAULT_OSS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", DEFAULT_OSS_KEY_SECRET)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the upload stage hashes, in order (it hashes through `pipeline.upload.transfer.hash_file`)."""
    calls: list[Path] = []
    real: Callable[[Path], Any] = pipeline.upload.transfer.hash_file

    def counting(path: Path) -> Any:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(pipeline.upload.transfer, "hash_file", counting)
    return calls


def write(path: Path, size: int, seed: int) -> bytes:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return data


def uploads(oss: RunningOss) -> int:
    """Upload requests the OSS emulator has seen (a multipart upload counts once)."""
    return oss.state.counters["PutObject"] + oss.state.counters["InitiateMultipartUpload"]


async def _run(tmp: Path, oss: RunningOss, manifest: Path, *, fail: bool = False,
               retry_failed: bool = False) -> RunResult:
    settings = EmulatorSettings(api_key=KEY, seed=1, time_scale=SCALE,
                                faults=FaultSettings(task_fail_rate=1.0) if fail else FaultSettings())
    async with start_emulator(settings) as emu:
        emu.state.objects = oss.store
        cfg = Config(endpoint=emu.url, time_scale=SCALE,
                     upload=UploadConfig(bucket="media", endpoint=oss.url, part_size=5 * MB))
        files = RunFiles(tmp / "results.jsonl", tmp / "state")
        return await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg,
                                    retry_failed=retry_failed))


async def test_a_file_changed_between_runs_is_uploaded_again_for_an_unfinished_item(
        tmp_path: Path, oss_env: None, hashed: list[Path]) -> None:
    """The issue's case: a 9,000,000-byte video is uploaded and its task fails; the file becomes
    12,000,000 bytes; `--retry-failed` hashes it again, uploads the new bytes, sends the new
    object and records it (before the fix it sent the old object, recorded at 9,000,000)."""
    video = tmp_path / "clip.mp4"
    write(video, 9 * MB, seed=1)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "v", "capability": "video_snapshot", "path": str(video)}])
    async with start_oss(OssSettings(buckets=("media",))) as oss:
        first = await _run(tmp_path, oss, manifest, fail=True)
        assert first.exit_code == ExitCode.PARTIAL
        (old,) = read_results(tmp_path / "results.jsonl")
        new_bytes = write(video, 12 * MB, seed=2)
        before = uploads(oss)
        again = await _run(tmp_path, oss, manifest, retry_failed=True)
        after = uploads(oss)
        new_key = f"media-pipeline/{hashlib.sha256(new_bytes).hexdigest()}.mp4"
        stored = oss.store.get("media", new_key)
        assert stored is not None and stored.stat().st_size == 12 * MB
    assert again.exit_code == ExitCode.OK, again.summary
    (line,) = read_results(tmp_path / "results.jsonl")
    assert line["status"] == "SUCCESS" and line["source_oss"] == f"oss://media/{new_key}"
    assert old["source_oss"] != line["source_oss"]
    assert after == before + 1 and len(hashed) == 2
    ckpt = Checkpoint.open(tmp_path / "state", read_only=True)
    try:
        record = ckpt.upload_record("v")
    finally:
        ckpt.close()
    assert record is not None and (record.key, record.size) == (new_key, 12 * MB)
    assert record.mtime_ns == video.stat().st_mtime_ns


async def test_an_unchanged_file_is_neither_hashed_nor_uploaded_again(
        tmp_path: Path, oss_env: None, hashed: list[Path]) -> None:
    """The same size and mtime: `--retry-failed` reuses the recorded object without reading
    the file or sending anything to OSS but the start check's one HEAD."""
    video = tmp_path / "clip.mp4"
    write(video, 9 * MB, seed=3)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "v", "capability": "video_snapshot", "path": str(video)}])
    async with start_oss(OssSettings(buckets=("media",))) as oss:
        assert (await _run(tmp_path, oss, manifest, fail=True)).exit_code == ExitCode.PARTIAL
        before = dict(oss.state.counters)
        again = await _run(tmp_path, oss, manifest, retry_failed=True)
        after = dict(oss.state.counters)
    assert again.exit_code == ExitCode.OK, again.summary
    assert len(hashed) == 1
    assert after == {**before, "HeadObject": before["HeadObject"] + 1}


async def test_a_touched_file_with_the_same_bytes_is_hashed_again_but_not_uploaded(
        tmp_path: Path, oss_env: None, hashed: list[Path]) -> None:
    """A new mtime with the same bytes: hashed again (it may have changed), found by HEAD, not
    uploaded; the record takes the new mtime, so the next reuse reads nothing."""
    video = tmp_path / "clip.mp4"
    write(video, 9 * MB, seed=4)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "v", "capability": "video_snapshot", "path": str(video)}])
    async with start_oss(OssSettings(buckets=("media",))) as oss:
        assert (await _run(tmp_path, oss, manifest, fail=True)).exit_code == ExitCode.PARTIAL
        stat = video.stat()
        os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        before = uploads(oss)
        again = await _run(tmp_path, oss, manifest, retry_failed=True)
        assert uploads(oss) == before
    assert again.exit_code == ExitCode.OK, again.summary
    assert len(hashed) == 2
    ckpt = Checkpoint.open(tmp_path / "state", read_only=True)
    try:
        record = ckpt.upload_record("v")
    finally:
        ckpt.close()
    assert record is not None and record.mtime_ns == stat.st_mtime_ns + 10**9


@pytest.mark.parametrize(("size", "mtime_ns", "holds"), [
    (100, 5, True),          # unchanged
    (120, 5, False),         # grew
    (100, 6, False),         # rewritten in place, same size
    (100, None, False),      # recorded before mtimes were kept: hashed again once
])
def test_a_recorded_object_holds_a_file_only_with_its_size_and_mtime(size: int, mtime_ns: int | None,
                                                                     holds: bool) -> None:
    """The reuse rule, pure: the recorded size and mtime must both match the file's stat."""
    recorded = UploadedObject("media", "k", size, "h", mtime_ns)
    assert recorded.holds(FileStamp(device=1, inode=2, size=100, mtime_ns=5)) is holds
