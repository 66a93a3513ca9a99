"""OSS as a dependency of a run (issue 18, bug 10): OSS that cannot be reached stops the run
resumably (exit 3, nothing FAILED, a message naming OSS) and the same command finishes it once
OSS is back; a bucket that does not exist stops it before anything starts (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import read_results, write_manifest
from tcp_gate import Gate

from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.backoff import RetryPolicy
from pipeline.core.errors import ConfigError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.emulator.oss import DEFAULT_OSS_KEY_ID, DEFAULT_OSS_KEY_SECRET, OssSettings
from pipeline.emulator.oss_server import start_oss
from pipeline.engine.runner import RunRequest, run

KEY = "upload-outage-key-20"
SCALE = 10.0


@pytest.fixture
def oss_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", DEFAULT_OSS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", DEFAULT_OSS_KEY_SECRET)


def _manifest(tmp: Path, n: int = 3) -> Path:
    rows = []
    for i in range(n):
        video = tmp / f"v{i}.mp4"
        video.write_bytes(bytes([i]) * 50_000)
        rows.append({"id": f"v{i}", "capability": "video_snapshot", "path": str(video)})
    return write_manifest(tmp / "m.jsonl", rows)


def _config(endpoint: str, oss_url: str, bucket: str = "media") -> Config:
    return Config(endpoint=endpoint, time_scale=SCALE, request_timeout=1.0,
                  retry=RetryPolicy(base=0.2, max_delay=1.0, max_attempts=3),
                  upload=UploadConfig(bucket=bucket, endpoint=oss_url, always=True))


async def test_oss_unreachable_stops_the_run_resumably_then_the_same_command_finishes(
        tmp_path: Path, oss_env: None) -> None:
    """OSS refusing connections: the run stops with exit 3, its reason naming OSS and where it
    is, no line written FAILED; once OSS is back the same command uploads each file once and
    finishes every item (before the fix every item was FAILED ConnectionError, exit 1, and a
    plain re-run retried nothing)."""
    manifest = _manifest(tmp_path)
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=1, time_scale=SCALE)) as emu, \
            start_oss(OssSettings(buckets=("media",))) as oss, Gate(oss.port) as gate:
        emu.state.objects = oss.store
        gate.shut()
        request = RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=_config(emu.url, gate.url))
        first = await run(request)
        assert first.exit_code == ExitCode.INTERRUPTED, first.reason
        assert first.reason is not None and "OssUnavailable" in first.reason and gate.url in first.reason
        assert "nothing was marked failed" in first.reason
        assert read_results(files.results) == []
        assert emu.counters()["tasks_created_total"] == 0
        await gate.open()
        again = await run(request)
        stored = dict(oss.state.stored)
    assert again.exit_code == ExitCode.OK, again.summary
    lines = read_results(files.results)
    assert sorted(line["id"] for line in lines) == ["v0", "v1", "v2"]
    assert all(line["status"] == "SUCCESS" for line in lines)
    assert sorted(stored.values()) == [1, 1, 1]


async def test_a_bucket_that_does_not_exist_stops_the_run_before_it_starts(tmp_path: Path, oss_env: None) -> None:
    """A misspelled `upload.bucket`: the start check's HEAD gets NoSuchBucket and the run stops
    with a ConfigError (exit 2) naming the bucket and the key, before the state dir exists."""
    manifest = _manifest(tmp_path, 1)
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    async with start_oss(OssSettings(buckets=("media",))) as oss:
        with pytest.raises(ConfigError) as caught:
            await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY,
                                 config=_config("http://127.0.0.1:9", oss.url, bucket="meida")))
        counters = dict(oss.state.counters)
    assert caught.value.key == "upload.bucket" and "'meida' does not exist" in str(caught.value)
    assert not files.state_dir.exists() and not files.results.exists()
    assert counters == {"HeadObject": 1}
