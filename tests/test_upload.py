"""The upload stage's building blocks against the emulator's OSS: content addressing, resume, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pipeline.config.sections import MAX_PRESIGN_S, MIN_PART_BYTES, UploadConfig
from pipeline.core.backoff import RetryPolicy
from pipeline.core.errors import ConfigError, FatalError, UnreadableResponse
from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.upload.errors import OssAuthError, OssUnavailable
from pipeline.upload.files import FileChanged, FileError, check_unchanged, object_key, stamp_of
from pipeline.upload.transfer import OssSession, UploadSettings, ensure_uploaded, presign_get

KEY_ID, SECRET = "upload-test-key-id", "upload-test-key-secret-0123456789"
MIB = 1024 * 1024


@pytest.fixture
async def oss_emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningOss]:
    """The emulator's OSS on a free port, and the SDK's credential variables set to its key pair."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.delenv("OSS_SESSION_TOKEN", raising=False)
    async with start_oss(OssSettings(key_id=KEY_ID, key_secret=SECRET, buckets=("media",))) as running:
        yield running


def _settings(emu: RunningOss, **changes: object) -> UploadSettings:
    base: dict[str, object] = {"bucket": "media", "prefix": "up", "endpoint": emu.url, "part_size": MIB}
    base.update(changes)
    return UploadSettings(**base)  # type: ignore[arg-type]


def _file(path: Path, size: int, seed: int = 1) -> Path:
    block = bytes((seed * 31 + i) % 251 for i in range(64 * 1024))  # not all zeros: parts differ
    with path.open("wb") as out:
        for start in range(0, size, len(block)):
            out.write(block[: min(len(block), size - start)])
    return path


async def test_large_file_uploads_multipart_and_head_shows_it(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A 20 MB file goes up in parts under its sha256 key, and the object holds exactly its bytes."""
    video = _file(tmp_path / "Clip.MP4", 20 * MIB)
    settings = _settings(oss_emu, part_size=4 * MIB)
    obj = await ensure_uploaded(video, settings, tmp_path / "state")
    assert obj.key == object_key("up", obj.sha256, video) and obj.key.endswith(".mp4")
    assert obj.size == 20 * MIB and obj.oss_uri == f"oss://media/{obj.key}"
    counts = oss_emu.state.counters
    assert (counts["InitiateMultipartUpload"], counts["UploadPart"], counts["PutObject"]) == (1, 5, 0)
    stored = oss_emu.store.stat("media", obj.key)
    assert stored is not None and stored.size == 20 * MIB
    assert stored.path.read_bytes() == video.read_bytes()


async def test_same_file_twice_uploads_once(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A second run finds the object by HEAD (same size) and sends no body again (the first
    run's second HEAD checks its upload landed)."""
    image = _file(tmp_path / "a.png", 300 * 1024)
    first = await ensure_uploaded(image, _settings(oss_emu), tmp_path / "state")
    second = await ensure_uploaded(image, _settings(oss_emu), tmp_path / "state")
    assert first == second
    assert oss_emu.state.counters["PutObject"] == 1 and oss_emu.state.counters["HeadObject"] == 3


async def test_same_file_in_fifty_items_is_hashed_and_uploaded_once(oss_emu: RunningOss, tmp_path: Path) -> None:
    """Fifty concurrent items naming one file, and one naming a copy of it, cost one HEAD, one
    PutObject and the HEAD that checks it landed."""
    image = _file(tmp_path / "a.jpg", 200 * 1024)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image.read_bytes())
    async with OssSession(_settings(oss_emu), tmp_path / "state") as session:
        results = await asyncio.gather(*(session.ensure_uploaded(image) for _ in range(50)),
                                       session.ensure_uploaded(copy))
    assert len(set(results)) == 1  # same bytes, same object, whatever the name
    assert oss_emu.state.counters["PutObject"] == 1 and oss_emu.state.counters["HeadObject"] == 2


async def test_cancelled_multipart_resumes_from_sent_parts(oss_emu: RunningOss, tmp_path: Path) -> None:
    """An upload cancelled after 4 of 12 parts resumes from them: the same upload id, only the rest sent."""
    video = _file(tmp_path / "long.mov", 12 * MIB, seed=3)
    state = tmp_path / "state"
    parts_done = 0
    task: asyncio.Task[object] | None = None

    def progress(_sent: int) -> None:
        nonlocal parts_done
        parts_done += 1
        if parts_done == 4 and task is not None:
            task.cancel()  # like a kill in the middle: the next run must pick up from here

    session = OssSession(_settings(oss_emu), state, progress=progress)
    task = asyncio.create_task(session.ensure_uploaded(video))
    with pytest.raises(asyncio.CancelledError):
        await task
    await session.close()
    first_parts = oss_emu.state.counters["UploadPart"]
    assert 4 <= first_parts < 12
    checkpoints = list((state / "oss-upload").glob("*.ucp"))
    assert len(checkpoints) == 1  # the SDK's resumable checkpoint is in the state dir

    obj = await ensure_uploaded(video, _settings(oss_emu), state)
    counts = oss_emu.state.counters
    assert counts["InitiateMultipartUpload"] == 1 and counts["ListParts"] == 1
    assert counts["UploadPart"] - first_parts <= 12 - 4
    assert counts["UploadPart"] < 12 + 4
    stored = oss_emu.store.get("media", obj.key)
    assert stored is not None and stored.read_bytes() == video.read_bytes()
    assert not list((state / "oss-upload").glob("*.ucp"))  # done: the checkpoint is gone


async def test_credentials_never_written_under_state_dir(oss_emu: RunningOss, tmp_path: Path) -> None:
    """Neither half of the AccessKey pair appears in any file the upload leaves in the state dir."""
    video = _file(tmp_path / "v.mp4", 6 * MIB)
    state = tmp_path / "state"
    session = OssSession(_settings(oss_emu), state, progress=lambda _n: task.cancel())
    task = asyncio.create_task(session.ensure_uploaded(video))
    with pytest.raises(asyncio.CancelledError):
        await task
    await session.close()
    await ensure_uploaded(_file(tmp_path / "small.png", 1000), _settings(oss_emu), state)
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files  # the interrupted upload left its checkpoint to look into
    for path in files:
        data = path.read_bytes()
        assert KEY_ID.encode() not in data and SECRET.encode() not in data, path


async def test_presigned_url_fetches_the_bytes(oss_emu: RunningOss, tmp_path: Path) -> None:
    """presign_get gives a URL that a plain GET, without credentials, reads the object's bytes from."""
    image = _file(tmp_path / "scan.png", 150 * 1024, seed=9)
    settings = _settings(oss_emu)
    obj = await ensure_uploaded(image, settings, tmp_path / "state")
    url = presign_get(obj, settings, expires_s=3600)
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200 and await resp.read() == image.read_bytes()


async def test_a_url_presigned_for_the_longest_allowed_is_one_oss_takes(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A URL presigned for MAX_PRESIGN_S (the one cap the upload stage and presign_get share) is accepted by
    OSS as emulated; a second longer is refused before anything is signed."""
    settings = _settings(oss_emu)
    obj = await ensure_uploaded(_file(tmp_path / "scan.png", 1000), settings, tmp_path / "state")
    async with aiohttp.ClientSession() as http, http.get(presign_get(obj, settings, MAX_PRESIGN_S)) as resp:
        assert resp.status == 200
    with pytest.raises(ConfigError, match="7 days"):
        presign_get(obj, settings, MAX_PRESIGN_S + 1)


def test_upload_settings_are_the_upload_config_and_the_run_s_retry_and_timeout() -> None:
    """UploadSettings.of keeps every upload: key as configured and adds the retry policy and the timeout;
    a bad part size is refused by the one check the config has."""
    config = UploadConfig(bucket="b", prefix="p", region="r", endpoint="e", concurrency=2, part_size=MIN_PART_BYTES,
                          always=True)
    settings = UploadSettings.of(config, RetryPolicy(max_attempts=2), 5.0)
    assert {f.name: getattr(settings, f.name) for f in dataclasses.fields(UploadConfig)} == dataclasses.asdict(config)
    assert (settings.retry.max_attempts, settings.timeout) == (2, 5.0)
    with pytest.raises(ConfigError, match=r"upload\.part_size"):
        UploadSettings(bucket="b", part_size=MIN_PART_BYTES - 1)
    with pytest.raises(ConfigError, match="request_timeout"):
        UploadSettings(bucket="b", timeout=0)


async def test_wrong_secret_is_fatal(oss_emu: RunningOss, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret OSS does not accept raises OssAuthError, a FatalError with HTTP 403, without retries."""
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "wrong")
    with pytest.raises(OssAuthError) as caught:
        await ensure_uploaded(_file(tmp_path / "a.png", 1000), _settings(oss_emu), tmp_path / "state")
    assert isinstance(caught.value, FatalError) and caught.value.http_status == 403
    assert caught.value.code == "SignatureDoesNotMatch" and caught.value.attempts == 1
    assert "wrong" not in str(caught.value)


async def test_directory_and_missing_file_are_file_errors(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A directory or a missing path fails the item with code FileError and sends nothing."""
    for path, words in ((tmp_path, "is a directory"), (tmp_path / "nope.mp4", "no such file")):
        with pytest.raises(FileError) as caught:
            await ensure_uploaded(path, _settings(oss_emu), tmp_path / "state")
        assert caught.value.code == "FileError" and words in caught.value.message
    assert sum(oss_emu.state.counters.values()) == 0


async def test_file_changed_during_upload_fails_and_leaves_no_object(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A file that grows while its parts are sent fails with FileChanged and its object is removed."""
    video = _file(tmp_path / "grow.mp4", 6 * MIB)

    def grow(_sent: int) -> None:
        with video.open("ab") as out:
            out.write(b"more")

    async with OssSession(_settings(oss_emu), tmp_path / "state", progress=grow) as session:
        with pytest.raises(FileChanged) as caught:
            await session.ensure_uploaded(video)
    assert caught.value.code == "FileError" and "changed while uploaded" in caught.value.message
    assert oss_emu.store.stat("media", object_key("up", "0" * 64, video)) is None
    assert oss_emu.state.counters["DeleteObject"] == 1


def test_check_unchanged_detects_size_and_mtime(tmp_path: Path) -> None:
    """check_unchanged passes for an untouched file and raises FileChanged once its size or mtime moves."""
    path = _file(tmp_path / "f.bin", 10)
    before = stamp_of(path)
    check_unchanged(path, before, "while hashed")
    os.utime(path, ns=(before.mtime_ns + 10**9, before.mtime_ns + 10**9))
    with pytest.raises(FileChanged, match="modified"):
        check_unchanged(path, before, "while hashed")
    path.write_bytes(b"x")
    with pytest.raises(FileChanged, match="size 10 -> 1"):
        check_unchanged(path, before, "while hashed")


async def test_5xx_and_dropped_connections_are_retried(oss_emu: RunningOss, tmp_path: Path) -> None:
    """A 503 HEAD, a dropped PutObject and a 503 PutObject are retried with backoff delays, each
    attempt a HEAD first, then it succeeds and a last HEAD finds the object."""
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    oss_emu.state.inject("HeadObject", "503")
    oss_emu.state.inject("PutObject", "drop")
    oss_emu.state.inject("PutObject", "503")
    image = _file(tmp_path / "r.png", 5000)
    async with OssSession(_settings(oss_emu), tmp_path / "state", sleep=fake_sleep, rand=lambda: 0.5) as session:
        obj = await session.ensure_uploaded(image)
    assert oss_emu.store.get("media", obj.key) is not None
    assert delays == [0.5, 1.0, 2.0]  # full jitter at rand 0.5, base 1 s: attempts 1, 2, 3
    assert oss_emu.state.counters["HeadObject"] == 5 and oss_emu.state.counters["PutObject"] == 3


@pytest.mark.parametrize("fault", ["drop_after", "garbage"])
async def test_an_upload_whose_answer_is_lost_or_unusable_is_checked_by_head(
        oss_emu: RunningOss, tmp_path: Path, fault: str) -> None:
    """A PutObject stored then cut off is found by the next attempt's HEAD and not sent again; a
    PutObject answered 200 by something that stored nothing (a proxy's page) is caught by the
    HEAD after it and sent again. Either way the object is there, written once."""
    async def no_sleep(_seconds: float) -> None:
        return None

    oss_emu.state.inject("PutObject", fault)  # type: ignore[arg-type]
    image = _file(tmp_path / "r.png", 5000)
    async with OssSession(_settings(oss_emu), tmp_path / "state", sleep=no_sleep) as session:
        obj = await session.ensure_uploaded(image)
    assert oss_emu.state.stored[("media", obj.key)] == 1
    assert oss_emu.state.counters["PutObject"] == (1 if fault == "drop_after" else 2)


async def test_retries_give_up_saying_oss_is_unavailable(oss_emu: RunningOss, tmp_path: Path) -> None:
    """When every attempt gets a 503 the upload raises OssUnavailable (a stop, not an item's
    failure) naming the endpoint, the bucket, the attempts and the last error."""
    async def no_sleep(_seconds: float) -> None:
        return None

    oss_emu.state.inject("HeadObject", "503", times=10)
    settings = _settings(oss_emu, retry=RetryPolicy(max_attempts=3))
    async with OssSession(settings, tmp_path / "state", sleep=no_sleep) as session:
        with pytest.raises(OssUnavailable) as caught:
            await session.ensure_uploaded(_file(tmp_path / "x.png", 10))
    assert isinstance(caught.value, FatalError) and caught.value.attempts == 3
    message = caught.value.message
    assert oss_emu.url in message and "'media'" in message and "3 attempts" in message and "503" in message
    assert oss_emu.state.counters["HeadObject"] == 3


async def test_giving_up_leaves_the_caught_error_alone(oss_emu: RunningOss, tmp_path: Path) -> None:
    """Past the retries OssUnavailable counts the attempts; the error it is raised from (an upload answered
    200 that stored nothing, the last attempt's) is left as it was caught: one attempt of its own."""
    async def no_sleep(_seconds: float) -> None:
        return None

    oss_emu.state.inject("PutObject", "garbage", times=3)
    settings = _settings(oss_emu, retry=RetryPolicy(max_attempts=3))
    async with OssSession(settings, tmp_path / "state", sleep=no_sleep) as session:
        with pytest.raises(OssUnavailable) as caught:
            await session.ensure_uploaded(_file(tmp_path / "x.png", 10))
    cause = caught.value.__cause__
    assert caught.value.attempts == 3 and "3 attempts" in caught.value.message
    assert isinstance(cause, UnreadableResponse) and cause.attempts == 1
    assert oss_emu.state.counters["PutObject"] == 3


async def test_unreachable_endpoint_is_oss_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening at the endpoint gives OssUnavailable after the retries, not a crash."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)

    async def no_sleep(_seconds: float) -> None:
        return None

    settings = UploadSettings(bucket="media", endpoint="http://127.0.0.1:9", retry=RetryPolicy(max_attempts=2))
    async with OssSession(settings, tmp_path / "state", sleep=no_sleep) as session:
        with pytest.raises(OssUnavailable) as caught:
            await session.ensure_uploaded(_file(tmp_path / "x.png", 10))
    assert caught.value.attempts == 2 and "ConnectionError" in caught.value.message
    assert "127.0.0.1:9" in caught.value.message and SECRET not in caught.value.message


@pytest.mark.parametrize(
    ("endpoint", "path_style"),
    [("http://127.0.0.1:9000", True), ("localhost:9000", True), ("http://[::1]:9", True),
     ("oss-cn-hangzhou.aliyuncs.com", False), ("https://oss-cn-beijing.aliyuncs.com", False), (None, False)],
)
def test_path_style_only_for_ip_or_localhost(endpoint: str | None, path_style: bool) -> None:
    """Path-style addressing is chosen exactly when the endpoint's host is an IP address or localhost."""
    assert UploadSettings(bucket="b", endpoint=endpoint).path_style is path_style


def test_check_names_missing_bucket_and_credentials() -> None:
    """check() explains a missing bucket first, then each missing credential variable, else None."""
    full = {"OSS_ACCESS_KEY_ID": "id", "OSS_ACCESS_KEY_SECRET": "s"}
    assert "upload.bucket" in (UploadSettings().check(full) or "")
    problem = UploadSettings(bucket="b").check({"OSS_ACCESS_KEY_ID": "id"})
    assert problem is not None and problem.startswith("OSS_ACCESS_KEY_SECRET not set")
    assert UploadSettings(bucket="b").check(full) is None


@pytest.mark.parametrize(
    ("prefix", "name", "key"),
    [("up", "a.MP4", "up/H.mp4"), ("/up/x/", "b.jpeg", "up/x/H.jpeg"), ("", "noext", "H"), ("p", "weird.t~x", "p/H")],
)
def test_object_key_is_prefix_hash_and_extension(prefix: str, name: str, key: str) -> None:
    """The key is {prefix}/{sha256}.{ext}, with the extension lower-cased and kept only when plain."""
    assert object_key(prefix, "H", Path(name)) == key
