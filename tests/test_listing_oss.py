"""An oss://BUCKET/PREFIX catalog source, listed through the official SDK's paginator against the
emulator's OSS on 127.0.0.1: every object once, in key order, with its ETag and size; faults
retried from the last page, and a listing that cannot finish raises rather than ends."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.cli.main import exit_code_for
from pipeline.config.sections import UploadConfig
from pipeline.core.backoff import RetryPolicy
from pipeline.core.errors import ConfigError, ManifestError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.job import Job
from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.manifest.analyses import validate_record
from pipeline.manifest.listed import Listed, ListingCounts, Selection
from pipeline.sources.oss_listing import list_oss, parse_oss_source
from pipeline.upload.errors import OssAuthError, OssUnavailable

KEY_ID, SECRET = "list-key-id", "list-secret-do-not-echo"
BUCKET = "media"
VIDEOS = Selection(analyses_by_type={"video": ["video_snapshot"], "image": ["image_analyze"]})


@pytest.fixture
async def oss_emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningOss]:
    """The emulator's OSS with one bucket, and its key pair in the environment, where the SDK reads it."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.delenv("OSS_SESSION_TOKEN", raising=False)
    async with start_oss(OssSettings(key_id=KEY_ID, key_secret=SECRET, buckets=(BUCKET,))) as running:
        yield running


class Sleeps:
    """A stand-in for time.sleep that records the backoff asked for (nothing waits on a clock)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def lister(emu: RunningOss, source: str, selection: Selection = VIDEOS, *, page_size: int = 1000,
           attempts: int = 5, sleeps: Sleeps | None = None) -> tuple[Iterator[Listed], ListingCounts]:
    counts = selection.new_counts()
    found = list_oss(source, UploadConfig(endpoint=emu.url), selection, counts=counts, page_size=page_size,
                     retry=RetryPolicy(max_attempts=attempts), timeout=10.0, sleep=sleeps or Sleeps(), rand=lambda: 0.5)
    return found, counts


async def drain(found: Iterator[Listed], n: int | None = None) -> list[Listed]:
    """The next `n` items (all when None), pulled in a worker thread: the SDK's client blocks, and
    the emulator answers on this test's event loop."""
    if n is None:
        return await asyncio.to_thread(list, found)
    return await asyncio.to_thread(lambda: [next(found) for _ in range(n)])


async def test_every_object_once_in_key_order_across_pages(oss_emu: RunningOss) -> None:
    """2,500 objects in three pages: each listed once in key order, with the ETag, size and
    LastModified OSS gave; folder markers and kinds without analyses are counted, not listed."""
    oss_emu.store.fill(BUCKET, (f"cat/{n:04d}.jpg" for n in range(2400)), b"jpeg bytes")
    oss_emu.store.fill(BUCKET, (f"cat/v/{n:02d}.mp4" for n in range(97)), b"video")
    oss_emu.store.fill(BUCKET, ["cat/", "cat/readme.txt", "cat/v/"], b"")
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    found, counts = lister(oss_emu, "oss://media/cat/")
    listed = await drain(found)
    expected = sorted([f"cat/{n:04d}.jpg" for n in range(2400)] + [f"cat/v/{n:02d}.mp4" for n in range(97)])
    assert [e.id for e in listed] == expected
    assert [e.line for e in listed] == list(range(1, len(expected) + 1))
    first = listed[0]
    assert first.item == {"id": "cat/0000.jpg", "oss": "oss://media/cat/0000.jpg", "analyses": ["image_analyze"]}
    assert first.stamp.etag == f'"{hashlib.md5(b"jpeg bytes").hexdigest().upper()}"' and first.stamp.size == 10
    assert first.stamp.last_modified is not None and first.stamp.mtime_ns is None
    assert before <= datetime.fromisoformat(first.stamp.last_modified.replace("Z", "+00:00"))
    assert listed[-1].kind == "video" and listed[-1].item["analyses"] == ["video_snapshot"]
    assert (counts.pages, counts.folder_markers, counts.no_analyses, counts.complete) == (3, 2, {"other": 1}, True)
    assert oss_emu.state.counters["ListObjectsV2"] == 3


async def test_a_prefix_is_an_oss_key_prefix(oss_emu: RunningOss) -> None:
    """oss://b/photos lists photos-old/ too (a key prefix as written); oss://b/photos/ one folder;
    oss://b the whole bucket."""
    oss_emu.store.fill(BUCKET, ["photos/a.jpg", "photos-old/b.jpg", "photosx.jpg", "other/c.jpg"], b"x")
    assert [e.id for e in await drain(lister(oss_emu, "oss://media/photos/")[0])] == ["photos/a.jpg"]
    assert [e.id for e in await drain(lister(oss_emu, "oss://media/photos")[0])] == [
        "photos-old/b.jpg", "photos/a.jpg", "photosx.jpg"]
    assert len(await drain(lister(oss_emu, "oss://media")[0])) == 4


async def test_each_record_validates_as_a_manifest_line(oss_emu: RunningOss) -> None:
    """A listed object goes through validate_record as a manifest line: its id the key, its source oss://."""
    oss_emu.store.fill(BUCKET, ["clips/a b.mp4"], b"v")
    [entry] = await drain(lister(oss_emu, "oss://media/clips/")[0])
    [job] = validate_record(entry.item, entry.line)  # type: ignore[misc]
    assert isinstance(job, Job)
    assert (job.id, job.analysis, job.source_kind, job.source) == ("clips/a b.mp4", "video_snapshot", "oss",
                                                                    "oss://media/clips/a b.mp4")


async def test_include_exclude_on_keys_and_a_pattern_that_matches_nothing(oss_emu: RunningOss) -> None:
    """The globs match the key, as they match a folder's relative path, and each pattern's hits are counted."""
    oss_emu.store.fill(BUCKET, ["in/2024/a.jpg", "in/2024/raw/b.jpg", "in/2025/c.mp4"], b"x")
    selection = Selection(analyses_by_type={"image": ["image_analyze"], "video": ["video_snapshot"]},
                          include=["/in/2024/**", "*.webm"], exclude=["raw/"])
    found, counts = lister(oss_emu, "oss://media/in/", selection)
    assert [e.id for e in await drain(found)] == ["in/2024/a.jpg"]
    assert counts.pattern_hits == {"/in/2024/**": 2, "*.webm": 0, "raw/": 1}
    assert counts.unmatched_patterns() == ["*.webm"] and counts.complete


@pytest.mark.parametrize("fault", ["503", "500", "drop", "garbage"])
async def test_a_listing_failing_mid_way_is_retried_from_the_last_page(oss_emu: RunningOss, fault: str) -> None:
    """The two requests after the first page fail (5xx, a dropped connection, a 200 that is not
    OSS's listing): retried with backoff from the page that failed, every key once, complete."""
    oss_emu.store.fill(BUCKET, (f"v/{n:03d}.mp4" for n in range(350)), b"v")
    oss_emu.state.inject("ListObjectsV2", fault, times=2, after=1)  # type: ignore[arg-type]
    sleeps = Sleeps()
    found, counts = lister(oss_emu, "oss://media/v/", page_size=100, sleeps=sleeps)
    listed = await drain(found)
    assert [e.id for e in listed] == [f"v/{n:03d}.mp4" for n in range(350)]
    assert (counts.retries, counts.pages, counts.complete) == (2, 4, True)
    assert len(sleeps.asked) == 2 and oss_emu.state.faults.applied[fault] == 2
    assert oss_emu.state.counters["ListObjectsV2"] == 6


async def test_a_listing_that_cannot_finish_raises_and_is_not_complete(oss_emu: RunningOss) -> None:
    """OSS failing after the first page past every retry: the iterator yields that page, then
    raises OssUnavailable (a resumable stop, exit 3) instead of ending; the listing is not complete."""
    oss_emu.store.fill(BUCKET, (f"v/{n:03d}.mp4" for n in range(250)), b"v")
    oss_emu.state.inject("ListObjectsV2", "503", times=None, after=1)
    sleeps = Sleeps()
    found, counts = lister(oss_emu, "oss://media/v/", page_size=100, attempts=3, sleeps=sleeps)
    listed: list[Listed] = []
    with pytest.raises(OssUnavailable) as caught:
        await asyncio.to_thread(lambda: listed.extend(found))
    assert [e.id for e in listed] == [f"v/{n:03d}.mp4" for n in range(100)]
    assert counts.yielded == 100 and not counts.complete
    assert len(sleeps.asked) == 2 and caught.value.attempts == 3
    assert "stopped after 1 pages" in str(caught.value) and exit_code_for(caught.value) == ExitCode.INTERRUPTED


async def test_closing_a_listing_early_stops_its_page_thread(oss_emu: RunningOss) -> None:
    """A caller that stops after a few items closes the listing, and the thread fetching pages
    ahead ends with it (none left behind holding a connection)."""
    oss_emu.store.fill(BUCKET, (f"v/{n:03d}.mp4" for n in range(500)), b"v")
    found, counts = lister(oss_emu, "oss://media/v/", page_size=100)
    await drain(found, 5)
    pump = next(t for t in threading.enumerate() if t.name == "oss-listing")
    found.close()  # type: ignore[attr-defined]
    await asyncio.to_thread(pump.join, 30)
    assert not pump.is_alive() and not counts.complete and counts.pages < 5


async def test_unreachable_oss_raises_after_the_retries(oss_emu: RunningOss) -> None:
    """No server at the endpoint (connection refused): retried, then OssUnavailable, nothing listed."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    selection = VIDEOS
    counts = selection.new_counts()
    found = list_oss("oss://media/", UploadConfig(endpoint=f"http://127.0.0.1:{port}"), selection, counts=counts,
                     retry=RetryPolicy(max_attempts=2), timeout=5.0, sleep=sleeps, rand=lambda: 0.5)
    with pytest.raises(OssUnavailable, match="ConnectionError"):
        await drain(found)
    assert len(sleeps.asked) == 1 and not counts.complete and counts.pages == 0


async def test_wrong_credentials_are_an_auth_error(oss_emu: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pair OSS refuses raises OssAuthError (exit 4) on the first page, without retries,
    and the secret appears in no message."""
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "wrong-" + SECRET)
    sleeps = Sleeps()
    found, counts = lister(oss_emu, "oss://media/", sleeps=sleeps)
    with pytest.raises(OssAuthError) as caught:
        await drain(found)
    assert exit_code_for(caught.value) == ExitCode.AUTH and not sleeps.asked and not counts.complete
    assert SECRET not in str(caught.value) and "OSS_ACCESS_KEY_ID" in str(caught.value)


async def test_a_missing_bucket_is_a_usage_error(oss_emu: RunningOss) -> None:
    """A bucket that does not exist raises ManifestError (exit 2) naming it, without retries."""
    sleeps = Sleeps()
    found, _ = lister(oss_emu, "oss://no-such-bucket/x/", sleeps=sleeps)
    with pytest.raises(ManifestError, match="bucket 'no-such-bucket' does not exist") as caught:
        await drain(found)
    assert exit_code_for(caught.value) == ExitCode.USAGE and not sleeps.asked


def test_no_credentials_in_the_environment_is_refused_at_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OSS_ACCESS_KEY_ID/SECRET the listing is refused before any request (exit 2)."""
    monkeypatch.delenv("OSS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("OSS_ACCESS_KEY_SECRET", raising=False)
    with pytest.raises(ConfigError, match="OSS_ACCESS_KEY_ID") as caught:
        list_oss("oss://media/", UploadConfig(endpoint="http://127.0.0.1:9"), VIDEOS)
    assert exit_code_for(caught.value) == ExitCode.USAGE


@pytest.mark.parametrize(("text", "bucket", "prefix"), [
    ("oss://media", "media", ""), ("oss://media/", "media", ""), ("oss://media/a/b/", "media", "a/b/"),
    ("oss://media/a b/ü", "media", "a b/ü"),
])
def test_parse_a_source(text: str, bucket: str, prefix: str) -> None:
    """oss://BUCKET[/PREFIX] splits into the bucket and the key prefix, taken as written."""
    where = parse_oss_source(text)
    assert (where.bucket, where.prefix) == (bucket, prefix)


@pytest.mark.parametrize("text", ["s3://media/x", "oss://", "oss:///x", "oss://Media/x", "oss://a/x", "media/x"])
def test_a_bad_source_is_refused(text: str) -> None:
    """Anything but oss:// with a valid bucket name is a usage error naming the problem."""
    with pytest.raises(ManifestError):
        parse_oss_source(text)
