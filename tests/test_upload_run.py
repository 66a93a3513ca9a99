"""Local media of any size through a run: big files go to OSS once (content-addressed), video by
`oss://`, images by a presigned URL; the result line names the object; no secret is written."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from support import read_results, write_manifest

from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.errors import ConfigError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.emulator.oss import DEFAULT_OSS_KEY_ID, DEFAULT_OSS_KEY_SECRET, OssSettings
from pipeline.emulator.oss_server import start_oss
from pipeline.engine.runner import RunRequest, run

KEY = "upload-run-key-93"
MEDIA = OssSettings(buckets=("media",))  # the emulator's OSS with the bucket these tests upload to
MB = 1024 * 1024


@pytest.fixture
def oss_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", DEFAULT_OSS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", DEFAULT_OSS_KEY_SECRET)


def big_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        chunk = os.urandom(MB)
        for _ in range(size // MB):
            f.write(chunk)
    return path


async def test_large_local_video_and_image_run_end_to_end(tmp_path: Path, oss_env: None) -> None:
    """A 20 MB local video (segmentation and snapshot, sent as oss://) and a 12 MB local image
    (extraction, sent as a presigned URL) succeed; each file is uploaded once although three items
    share the video; the lines name the object; neither key is written anywhere."""
    video = big_file(tmp_path / "talk.mp4", 20 * MB)
    image = big_file(tmp_path / "poster.png", 12 * MB)
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "seg", "capability": "video_segmentation", "path": str(video), "output": "oss://out/seg/"},
        {"id": "snap", "capability": "video_snapshot", "path": str(video)},
        {"id": "asr", "capability": "audio_asr", "path": str(video)},
        {"id": "ocr", "capability": "image_analyze", "path": str(image)},
    ])
    settings = EmulatorSettings(api_key=KEY, seed=1, time_scale=20.0)
    async with start_emulator(settings) as emu, start_oss(MEDIA) as oss:
        emu.state.objects = oss.store  # the service routes read what was uploaded
        cfg = Config(endpoint=emu.url, time_scale=20.0,
                     upload=UploadConfig(bucket="media", endpoint=oss.url, part_size=5 * MB))
        files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
        result = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg))
        counters = dict(oss.state.counters)
    assert result.exit_code == ExitCode.OK, result.summary
    lines = {line["id"]: line for line in read_results(tmp_path / "results.jsonl")}
    assert all(line["status"] == "SUCCESS" for line in lines.values()), lines
    assert {line["source_oss"] for k, line in lines.items() if k != "ocr"} == {lines["seg"]["source_oss"]}
    assert lines["seg"]["source_oss"].startswith("oss://media/media-pipeline/") and \
        lines["seg"]["source_oss"].endswith(".mp4")
    assert lines["ocr"]["source_oss"].endswith(".png")
    # The service read the uploaded object: its answer follows the object's bytes, not just its name.
    assert lines["seg"]["data"] != [], lines["seg"]
    uploads = counters.get("InitiateMultipartUpload", 0) + counters.get("PutObject", 0)
    assert uploads == 2, counters  # one video, one image
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".mp4", ".png")]
    for path in written:
        text = path.read_bytes()
        assert DEFAULT_OSS_KEY_SECRET.encode() not in text and KEY.encode() not in text, path


async def test_a_missing_object_fails_the_task_as_the_service_would(tmp_path: Path, oss_env: None) -> None:
    """An oss:// input in a bucket the OSS emulator holds, but with no such object, ends FAILED
    with a message naming the object; other buckets behave as before."""
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "gone", "capability": "video_snapshot", "oss": "oss://media/nope.mp4"},
        {"id": "elsewhere", "capability": "video_snapshot", "oss": "oss://other-bucket/v.mp4"},
    ])
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=1, time_scale=20.0)) as emu, start_oss(MEDIA) as oss:
        emu.state.objects = oss.store
        big_file(tmp_path / "seed.mp4", MB)
        from pipeline.upload.transfer import UploadSettings, ensure_uploaded
        await ensure_uploaded(tmp_path / "seed.mp4", UploadSettings(bucket="media", endpoint=oss.url), tmp_path / "s")
        files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
        result = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY,
                                      config=Config(endpoint=emu.url, time_scale=20.0)))
    lines = {line["id"]: line for line in read_results(tmp_path / "results.jsonl")}
    assert result.exit_code == ExitCode.PARTIAL
    assert lines["gone"]["status"] == "FAILED" and "oss://media/nope.mp4" in lines["gone"]["error"]["message"]
    assert lines["elsewhere"]["status"] == "SUCCESS"


async def test_uploads_without_credentials_stop_before_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """An upload section with no AccessKey in the environment is a ConfigError (exit 2) before
    the state dir is created."""
    monkeypatch.delenv("OSS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("OSS_ACCESS_KEY_SECRET", raising=False)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "capability": "video_snapshot",
                                                      "oss": "oss://b/v.mp4"}])
    cfg = Config(endpoint="http://127.0.0.1:9", upload=UploadConfig(bucket="media"))
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    with pytest.raises(ConfigError, match="OSS_ACCESS_KEY_ID"):
        await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg))
    assert not (tmp_path / "state").exists()


async def test_an_upload_cut_off_midway_resumes_from_its_parts(tmp_path: Path, oss_env: None) -> None:
    """A run cancelled in the middle of a multipart upload (as a crash would cut it), then run
    again: the upload continues with the same upload id from the parts already sent, and the
    item is submitted to the service once."""
    video = big_file(tmp_path / "long.mp4", 40 * MB)  # 8 parts of 5 MB
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "v", "capability": "video_snapshot", "path": str(video)}])
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=1, time_scale=20.0)) as emu, start_oss(MEDIA) as oss:
        emu.state.objects = oss.store
        cfg = Config(endpoint=emu.url, time_scale=20.0,
                     upload=UploadConfig(bucket="media", endpoint=oss.url, part_size=5 * MB, concurrency=1))
        files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
        request = RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg)
        first = asyncio.create_task(run(request))
        while oss.state.counters["UploadPart"] < 3 and not first.done():  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.01)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        sent_before = oss.state.counters["UploadPart"]
        assert 3 <= sent_before < 8
        result = await run(request)
        counters = dict(oss.state.counters)
        created = emu.counters()["tasks_created_total"]
    assert result.exit_code == ExitCode.OK, result.summary
    assert counters["InitiateMultipartUpload"] == 1, counters
    assert counters["UploadPart"] - sent_before <= 8 - sent_before + 3, counters  # only the rest (and in-flight)
    assert created == 1


def test_a_refused_oss_key_stops_like_a_refused_api_key(tmp_path: Path) -> None:
    """Through the command line, against `emulator --oss-port`: a wrong OSS secret stops the run
    at the start check with exit 4, naming the OSS variables to fix, with no traceback and nothing
    written; the right secret then uploads and finishes."""
    import socket
    import subprocess
    import sys
    import time

    from support import REPO, cli, cli_env

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    port, oss_port = free_port(), free_port()
    emu = subprocess.Popen([sys.executable, "-m", "pipeline", "emulator", "--port", str(port), "--api-key", KEY,
                            "--time-scale", "20", "--oss-port", str(oss_port), "--oss-key-id", "AK",
                            "--oss-key-secret", "SK", "--oss-bucket", "media"], cwd=REPO, env=cli_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", oss_port)) == 0:
                    break
            time.sleep(0.05)
        big_file(tmp_path / "clip.mp4", 9 * MB)
        manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "v", "capability": "video_snapshot",
                                                          "path": str(tmp_path / "clip.mp4")}])
        (tmp_path / "cfg.yaml").write_text(f'upload: {{bucket: media, endpoint: "http://127.0.0.1:{oss_port}"}}\n')
        args = ["run", str(manifest), "--config", str(tmp_path / "cfg.yaml"), "--endpoint",
                f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r.jsonl"), "--progress", "off"]
        env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "20", "OSS_ACCESS_KEY_ID": "AK"}
        refused = cli(args, env={**env, "OSS_ACCESS_KEY_SECRET": "wrong-secret-8d1f"})
        assert refused.returncode == 4, refused.stderr[-2000:]
        assert "OSS_ACCESS_KEY_SECRET" in refused.stderr and "Traceback" not in refused.stderr
        assert "wrong-secret-8d1f" not in refused.stderr
        # The start check's HEAD was refused: nothing was started, nothing written.
        assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "r.jsonl.state").exists()
        done = cli(args, env={**env, "OSS_ACCESS_KEY_SECRET": "SK"})
        assert done.returncode == 0, done.stderr[-2000:]
        (line,) = read_results(tmp_path / "r.jsonl")
        assert line["status"] == "SUCCESS" and line["source_oss"].startswith("oss://media/")
    finally:
        emu.terminate()
        emu.communicate(timeout=20)


async def test_an_items_analyses_share_one_upload_and_chain_on_it(tmp_path: Path, oss_env: None) -> None:
    """A 12 MB local video with three analyses (segmentation, a summary after it, keyframes) is
    uploaded once; the summary is sent the segmentation's chunks for that very object."""
    video = big_file(tmp_path / "lecture.mp4", 12 * MB)
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "lecture", "path": str(video), "analyses": [
            {"name": "seg", "capability": "video_segmentation", "output": "oss://out/seg/"},
            {"name": "summary", "capability": "video_summarization", "after": "seg", "output": "oss://out/sum/"},
            "video_snapshot"]}])
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=1, time_scale=20.0)) as emu, start_oss(MEDIA) as oss:
        emu.state.objects = oss.store
        cfg = Config(endpoint=emu.url, time_scale=20.0,
                     upload=UploadConfig(bucket="media", endpoint=oss.url, part_size=5 * MB))
        result = await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp_path / "r.jsonl", tmp_path / "s"),
                                      api_key=KEY, config=cfg))
        oss_counters, counters = dict(oss.state.counters), emu.counters()
    assert result.exit_code == ExitCode.OK, result.summary
    lines = {line["analysis"]: line for line in read_results(tmp_path / "r.jsonl")}
    assert sorted(lines) == ["seg", "summary", "video_snapshot"]
    assert len({line["source_oss"] for line in lines.values()}) == 1  # one object for the three
    assert oss_counters.get("InitiateMultipartUpload", 0) + oss_counters.get("PutObject", 0) == 1, oss_counters
    assert counters["chained_chunks_matched"] == 1
