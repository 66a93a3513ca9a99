"""A catalog source meeting bad input and faults, run against the emulator (and its OSS) on
127.0.0.1: an OSS listing failing part way is retried, or stops the run resumably without
deciding anything vanished; refused keys, missing buckets and a directory that is a file stop the
run before anything is written; an unreadable subtree, a file changed or deleted between its
listing and its reading, an object rewritten while it is processed, and patterns that match
nothing each end the way the issue asks."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from catalog_support import (
    BUCKET,
    KEY,
    OSS_ID,
    OSS_SECRET,
    QUICK,
    VIDEOS,
    cli_args,
    counts,
    fill_two_pages,
    finish,
    folder,
    folder_config,
    oss_config,
    session,
    start_cli,
    state_of,
    until,
)
from run_support import config, current, emulator
from support import read_results

from pipeline.cli.main import exit_code_for
from pipeline.config.sections import UploadConfig
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.emulator.oss_server import RunningOss
from pipeline.engine.item_source import Listing

#: Image analysis tasks run 2 real seconds (20 emulated at time scale 10): a kill -9 finds one in flight.
HELD = {"image-analyze": (20.0, 20.0)}

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's time scale, its key); image tasks held long."""
    base = emulator()
    return emulator(durations={**base.durations, **HELD})


async def test_a_listing_failing_between_pages_is_retried_and_decides_the_delta(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """A 503 and a dropped connection on the second page of a run's listing are retried from that
    page: the run reads the whole catalog, sends nothing for the unchanged videos, and (the listing
    complete) marks the one removed from page 2 vanished."""
    fill_two_pages(oss)
    cfg = oss_config(emu, oss)
    first, n1 = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert (first.exit_code, n1, counts(first)) == (ExitCode.OK, 5, (5, 0, 0, 0))
    oss.store.delete(BUCKET, VIDEOS[-1])
    oss.state.faults.inject("ListObjectsV2", "503", after=1)
    oss.state.faults.inject("ListObjectsV2", "drop")  # the retry of that page, after the 503
    second, n2 = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert oss.state.faults.applied["503"] == 1 and oss.state.faults.applied["drop"] == 1
    assert second.exit_code == ExitCode.OK and n2 == 0, second.summary
    assert second.summary["catalog"]["listing"]["complete"] is True
    assert counts(second) == (0, 0, 4, 1)


async def test_oss_failing_past_the_retries_mid_listing_stops_resumably_and_vanishes_nothing(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """OSS answering 503 from the second page on, past every retry: the run stops with exit 3,
    having run what page 1 held, and marks nothing vanished (neither the video removed from page 2
    nor those it never reached); once OSS answers, the same command completes and decides them."""
    fill_two_pages(oss)
    cfg = oss_config(emu, oss)
    await session(tmp_path, emu, "oss://media/v/", cfg)
    oss.store.delete(BUCKET, VIDEOS[-1])  # on page 2: unseen by the broken listing
    oss.store.fill(BUCKET, [VIDEOS[0]], b"new video bytes")  # on page 1: changed, sent
    oss.state.faults.inject("ListObjectsV2", "503", times=None, after=1)
    stopped, n = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert stopped.exit_code == ExitCode.INTERRUPTED and "run again" in str(stopped.reason), stopped.summary
    assert n <= 1 and stopped.summary["catalog"]["vanished"] == 0  # page 1's changed video, unless the stop came first
    assert stopped.summary["catalog"]["decided_vanished"] is False
    assert (VIDEOS[-1], "video_snapshot") in current(tmp_path)  # still current: nothing decided
    oss.state.faults.clear()
    resumed, n2 = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert resumed.exit_code == ExitCode.OK and n + n2 == 1  # the changed video, sent once in all
    assert resumed.summary["catalog"]["vanished"] == 1
    assert sorted(i for i, _ in current(tmp_path)) == VIDEOS[:-1]


async def test_unreachable_oss_wrong_keys_and_a_missing_bucket_stop_before_anything_is_written(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the run's start: OSS not answering is exit 3, a key pair it refuses exit 4 (the secret
    in no message), a bucket it does not have exit 2; none of them creates the state dir."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    oss.store.fill(BUCKET, ["v/a.mp4"], b"v")
    cases = [("unreachable", "oss://media/v/", oss_config(emu, closed), ExitCode.INTERRUPTED),
             ("missing", "oss://no-such-bucket/v/", oss_config(emu, oss), ExitCode.USAGE)]
    for name, source, cfg, code in cases:
        with pytest.raises(Exception) as caught:
            await session(tmp_path / name, emu, source, cfg)
        assert exit_code_for(caught.value) == code, (name, caught.value)
        assert not (tmp_path / name).exists()
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "wrong-" + OSS_SECRET)
    with pytest.raises(Exception) as refused:
        await session(tmp_path / "auth", emu, "oss://media/v/", oss_config(emu, oss))
    assert exit_code_for(refused.value) == ExitCode.AUTH and OSS_SECRET not in str(refused.value)
    assert not (tmp_path / "auth").exists()


# ---- folders --------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["{file}/", "{file}"])
async def test_a_directory_that_is_a_file_is_refused_before_anything_is_written(
        tmp_path: Path, emu: RunningEmulator, given: str) -> None:
    """`run photo.png/` (a file given as a directory) and `run photo.png` (a file that is neither a
    directory nor a manifest) stop with exit 2 and a message saying what to give, and create nothing."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG")
    with pytest.raises(Exception) as caught:
        await session(tmp_path / "run", emu, given.format(file=photo), folder_config(emu))
    assert exit_code_for(caught.value) == ExitCode.USAGE, caught.value
    assert "directory" in str(caught.value) or "manifest" in str(caught.value)
    assert not (tmp_path / "run").exists()


async def test_an_unreadable_subtree_is_skipped_counted_and_nothing_under_it_vanishes(
        tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A subdirectory that cannot be read on night 2 is skipped with a warning and named in the
    summary's listing; its items stay current (not vanished), while the rest of the folder is
    decided as usual (a new file sent, the others unchanged)."""
    media = folder(tmp_path / "media", ["a.png", "locked/b.png", "locked/deep/c.png", "z.png"])
    cfg = folder_config(emu)
    _, n1 = await session(tmp_path, emu, media, cfg)
    folder(media, ["n.png"])
    real_scandir = os.scandir
    locked = str(media / "locked")

    def scandir(path: Any = ".") -> Any:  # the directory answers EACCES, as chmod 0 does to a non-root user
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING):
        second, n2 = await session(tmp_path, emu, media, cfg)
    assert (n1, n2) == (4, 1)
    assert second.exit_code == ExitCode.OK, second.summary
    assert second.summary["catalog"]["listing"]["unreadable"] == ["locked/"]
    assert counts(second) == (1, 0, 2, 0)
    assert sum("cannot read this directory" in r.getMessage() for r in caplog.records) == 1
    assert {i for i, _ in current(tmp_path)} == {"a.png", "locked/b.png", "locked/deep/c.png", "n.png", "z.png"}


async def test_patterns_that_match_nothing_warn_and_end_with_zero_items(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """--include that matches no file: a warning naming the pattern, another saying the listing
    yielded no items, exit 0, nothing sent."""
    media = folder(tmp_path / "media", ["a.png", "b.png"])
    with caplog.at_level(logging.WARNING):
        result, n = await session(tmp_path, emu, media, folder_config(emu), listing=Listing(include=("*.JPG",)))
    messages = [r.getMessage() for r in caplog.records]
    assert (result.exit_code, n) == (ExitCode.OK, 0), (result.summary, messages)
    assert any("'*.JPG' matched nothing" in m for m in messages)
    assert any("yielded no items" in m for m in messages)
    assert result.summary["catalog"]["listing"]["items"] == 0


async def test_a_file_changed_or_deleted_between_listing_and_reading_is_never_sent_stale(
        tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed file rewritten before it is read for its submit fails FileError unsent (a result
    of its new bytes would be recorded under the old stamp and pass for current), one deleted fails
    FileError too; the next night sends the rewritten one (changed) and finds the deleted one
    vanished."""
    from pipeline.engine import submission

    media = folder(tmp_path / "media", ["a.png", "b.png", "c.png"])
    real_body = submission.request_body

    async def racing_body(cap: Any, job: Any) -> Any:  # what another process does between the two
        if job.id == "a.png":
            (media / "a.png").write_bytes(b"\x89PNG rewritten meanwhile, longer")
        elif job.id == "b.png":
            (media / "b.png").unlink()
        return await real_body(cap, job)

    monkeypatch.setattr(submission, "request_body", racing_body)
    first, n1 = await session(tmp_path, emu, media, folder_config(emu))
    monkeypatch.setattr(submission, "request_body", real_body)
    lines = current(tmp_path)
    assert n1 == 1 and first.exit_code == ExitCode.PARTIAL, first.summary
    changed = lines[("a.png", "object_detection")]
    assert (changed["status"], changed["error"]["code"]) == ("FAILED", "FileError")
    assert "changed after it was listed" in changed["error"]["message"]
    assert lines[("b.png", "object_detection")]["error"]["code"] == "FileError"
    second, n2 = await session(tmp_path, emu, media, folder_config(emu))
    assert n2 == 1 and counts(second) == (0, 1, 1, 1), second.summary
    assert current(tmp_path)[("a.png", "object_detection")]["status"] == "SUCCESS"


async def test_an_object_rewritten_while_it_is_processed_is_processed_again_by_the_next_run(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object rewritten (a new ETag) after it was listed, while its task runs: its line keeps the
    fingerprint of the ETag it was listed with, so the next run lists the new ETag, sends it once
    more, and the run after that sends nothing."""
    from pipeline.engine import submission

    oss.store.fill(BUCKET, ["v/a.mp4", "v/b.mp4"], b"video bytes")
    real_body = submission.request_body
    rewritten = []

    async def rewriting_body(cap: Any, job: Any) -> Any:
        body = await real_body(cap, job)
        if job.id == "v/a.mp4" and not rewritten:
            rewritten.append(oss.store.fill(BUCKET, ["v/a.mp4"], b"other video bytes"))
        return body

    monkeypatch.setattr(submission, "request_body", rewriting_body)
    cfg = oss_config(emu, oss)
    _, n1 = await session(tmp_path, emu, "oss://media/v/", cfg)
    monkeypatch.setattr(submission, "request_body", real_body)
    listed_with = current(tmp_path)[("v/a.mp4", "video_snapshot")]["fingerprint"]
    second, n2 = await session(tmp_path, emu, "oss://media/v/", cfg)
    third, n3 = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert rewritten and (n1, n2, n3) == (2, 1, 0)
    assert counts(second) == (0, 1, 1, 0) and counts(third) == (0, 0, 2, 0)
    assert current(tmp_path)[("v/a.mp4", "video_snapshot")]["fingerprint"] != listed_with


async def test_two_lines_with_the_same_id_the_second_is_rejected(tmp_path: Path, emu: RunningEmulator) -> None:
    """Two sources yielding one id in one catalog (two manifest lines, two URLs): the first is run,
    the second rejected naming the id, and the current view holds the first's source only."""
    from support import write_manifest

    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "x", "capability": "object_detection", "url": "https://example.com/one.jpg"},
        {"id": "x", "capability": "object_detection", "url": "https://example.com/two.jpg"}])
    result, n = await session(tmp_path, emu, manifest, config(emu))
    rejects = [json.loads(line) for line in (tmp_path / "results.rejects.jsonl").read_text().splitlines()]
    assert (result.exit_code, n) == (ExitCode.PARTIAL, 1)
    assert [(r["line"], "duplicate id 'x'" in r["reason"]) for r in rejects] == [(2, True)]
    assert current(tmp_path)[("x", "object_detection")]["source"] == "https://example.com/one.jpg"


async def test_a_file_changed_before_its_upload_is_not_sent(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
    """With uploads, a listed file rewritten before it is hashed and uploaded fails FileError
    unsent (its object holds other bytes than the stamp its fingerprint records); the next run
    sends it."""
    from pipeline.upload.stage import Uploads

    media = folder(tmp_path / "media", ["a.png"])
    real_prepare = Uploads.prepare

    async def racing_prepare(self: Uploads, job: Any) -> Any:
        (media / "a.png").write_bytes(b"\x89PNG rewritten before its upload")
        return await real_prepare(self, job)

    cfg = folder_config(emu, upload=UploadConfig(endpoint=oss.url, bucket=BUCKET, always=True))
    monkeypatch.setattr(Uploads, "prepare", racing_prepare)
    first, n1 = await session(tmp_path, emu, media, cfg)
    monkeypatch.setattr(Uploads, "prepare", real_prepare)
    line = current(tmp_path)[("a.png", "object_detection")]
    assert (n1, line["status"], line["error"]["code"]) == (0, "FAILED", "FileError"), first.summary
    assert "changed after it was listed" in line["error"]["message"]
    second, n2 = await session(tmp_path, emu, media, cfg)
    assert n2 == 1 and counts(second) == (0, 1, 0, 0)


# ---- kill -9 ----------------------------------------------------------------------------------

async def test_kill_9_during_a_listing_then_resume(tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """kill -9 while the listing waits for its second page (page 1's videos, sent without waiting
    for it, done): the resume lists
    the prefix again, skips what is done, sends the rest; every video was sent once in all, each
    has one current line, and the results file holds nothing else."""
    fill_two_pages(oss)
    env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "10", "OSS_ACCESS_KEY_ID": OSS_ID,
           "OSS_ACCESS_KEY_SECRET": OSS_SECRET}
    # A request timeout far longer than the wait: page 1's videos must run while page 2 hangs.
    args = cli_args(tmp_path, "oss://media/v/", emu, analyses_by_type={"video": ["video_snapshot"]},
                    upload={"endpoint": oss.url}, request_timeout=300)
    # Requests 1 and 2 answer (the start's probe, page 1); page 2 hangs until cleared.
    oss.state.faults.inject("ListObjectsV2", "hang", after=2)
    proc = await start_cli(args, env)
    await until(proc, lambda: oss.state.faults.applied["hang"] == 1 and state_of(tmp_path).get("SUCCESS", 0) == 3)
    proc.kill()
    await finish(proc)
    oss.state.faults.clear()
    code, err = await finish(await start_cli(args, env))

    assert code == 0, err[-2000:]
    counters = emu.counters()
    assert len(counters["submissions"]) == 5 and counters["duplicate_submissions"] == 0
    assert sorted(i for i, _ in current(tmp_path)) == VIDEOS
    assert len(read_results(tmp_path / "results.jsonl")) == 5


async def test_kill_9_during_a_changed_items_re_run_then_resume(tmp_path: Path, emu: RunningEmulator) -> None:
    """kill -9 while a changed item's new task runs: until the resume it has no current line (its
    superseded one is not served); the resume polls the recorded task (never sent again), and the
    item ends with exactly one current line, naming its new source."""
    from support import write_manifest

    rows = [{"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/p{i}.jpg"}
            for i in range(3)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "10"}
    args = cli_args(tmp_path, str(manifest), emu)
    code, err = await finish(await start_cli(args, env))
    assert code == 0, err[-2000:]
    rows[0]["url"] = "https://example.com/CHANGED.jpg"
    write_manifest(manifest, rows)
    proc = await start_cli(args, env)
    await until(proc, lambda: state_of(tmp_path).get("submitted", 0) == 1)
    proc.kill()
    await finish(proc)
    assert sorted(i for i, _ in current(tmp_path)) == ["img-1", "img-2"]  # img-0: no stale line served
    code, err = await finish(await start_cli(args, env))
    assert code == 0, err[-2000:]
    counters = emu.counters()
    assert len(counters["submissions"]) == 4 and counters["duplicate_submissions"] == 0
    lines = current(tmp_path)
    assert lines[("img-0", "image_analyze")]["source"] == "https://example.com/CHANGED.jpg" and len(lines) == 3
    assert len(read_results(tmp_path / "results.jsonl")) == 4  # night 1's three, the changed one's new line


# ---- images listed from OSS -------------------------------------------------------------------

async def test_images_listed_from_oss_are_sent_as_presigned_urls_that_no_line_or_log_shows(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bucket of images runs through image_analyze and object_detection (services that take no
    oss://): each is sent a presigned GET URL that fetches the object's bytes from OSS; the lines
    name the oss:// object, and no line, summary, log record or checkpoint byte holds the URL's
    signature or the key pair; a second run sends nothing (the fingerprint is the ETag and size,
    not the URL, which changes every run)."""
    import aiohttp

    from pipeline.engine import submission

    for name in ("a", "b"):
        oss.store.fill(BUCKET, [f"img/{name}.jpg"], f"jpeg bytes of {name}".encode())
    real_body = submission.request_body
    urls: list[str] = []

    async def seen_body(cap: Any, job: Any) -> Any:
        urls.append(job.source)
        return await real_body(cap, job)

    monkeypatch.setattr(submission, "request_body", seen_body)
    cfg = config(emu, analyses_by_type={"image": ["image_analyze", "object_detection"]},
                 upload=UploadConfig(endpoint=oss.url), retry=QUICK)
    with caplog.at_level(logging.DEBUG):
        first, n1 = await session(tmp_path, emu, "oss://media/img/", cfg)
        second, n2 = await session(tmp_path, emu, "oss://media/img/", cfg)
    assert (first.exit_code, n1, n2) == (ExitCode.OK, 4, 0), first.summary
    assert counts(second) == (0, 0, 4, 0)
    assert len(urls) == 4 and all(url.startswith(oss.url) and "x-oss-signature=" in url for url in urls)
    async with aiohttp.ClientSession() as http:  # each URL reads its object, without a key pair
        for url in urls:
            async with http.get(url) as answer:
                assert answer.status == 200 and (await answer.read()).startswith(b"jpeg bytes of ")
    lines = current(tmp_path)
    assert {(i, line["source"]) for (i, _), line in lines.items()} == {
        ("img/a.jpg", "oss://media/img/a.jpg"), ("img/b.jpg", "oss://media/img/b.jpg")}
    assert all(line["status"] == "SUCCESS" for line in lines.values())
    signatures = {url.split("x-oss-signature=")[1].split("&")[0] for url in urls}
    written = b"".join(p.read_bytes() for p in [*tmp_path.glob("results*"), *(tmp_path / "state").rglob("*")]
                       if p.is_file())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in [*signatures, OSS_SECRET, OSS_ID, "x-oss-signature"]:
        assert secret.encode() not in written and secret not in logged, secret


async def test_an_uploaded_image_line_names_its_file_not_the_presigned_url(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """A local image uploaded and sent to a url-only service as a presigned URL: its line's source
    is the local path and source_oss the object; the URL (a credential) is in no line."""
    media = folder(tmp_path / "media", ["a.png"])
    cfg = config(emu, analyses_by_type={"image": ["image_analyze"]},
                 upload=UploadConfig(endpoint=oss.url, bucket=BUCKET, always=True))
    result, n = await session(tmp_path, emu, media, cfg)
    line = current(tmp_path)[("a.png", "image_analyze")]
    assert (result.exit_code, n, line["status"]) == (ExitCode.OK, 1, "SUCCESS")
    assert line["source"] == str(media / "a.png") and line["source_oss"].startswith("oss://media/")
    assert b"x-oss-signature" not in (tmp_path / "results.jsonl").read_bytes()
