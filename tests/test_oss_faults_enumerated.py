"""Every way OSS can misbehave while a run uploads, from one table, against the emulator's OSS.

Each row makes OSS misbehave one way: refused connections, a hang with no bytes, answers slower
than the timeout (and, transiently, slower but within it), connections dropped before the
request is processed and after it was (the object stored, the answer lost), 500s (transient,
then past the retry budget), a 2xx whose body is a proxy's HTML page, the key pair refused (at
the start check, and revoked mid-run), the bucket missing (at the start check, and deleted
mid-run). Faults hit the operations that write objects (PutObject and the multipart sequence:
the run's files include one multipart upload). Then OSS comes back. Every row checks: the
documented exit code (README's table; a stop before anything starts is the error's own code),
that the stop names OSS (or the bucket) and is bounded, that nothing is written FAILED (no OSS
fault is an item's: the same command is the resume), that no object is written more than once
(the emulator's writes per key: a lost answer is found by the next attempt's HEAD), that no item
is submitted to the service twice, and that the same command then finishes every item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import assert_exactly_once, read_results, write_manifest
from tcp_gate import Gate

from pipeline.cli.main import exit_code_for
from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.backoff import RetryPolicy
from pipeline.core.errors import PipelineError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, RunningEmulator, start_emulator
from pipeline.emulator.oss import DEFAULT_OSS_KEY_ID, DEFAULT_OSS_KEY_SECRET, OssSettings
from pipeline.emulator.oss_faults import UPLOAD_OPERATIONS, FaultKind
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.engine.runner import RunRequest, run

KEY = "oss-faults-key-3a"
REVOKED = "oss-faults-revoked-secret-9e"  # OSS's secret once the key pair is revoked
BUCKET = "media"
SCALE = 10.0
TIMEOUT = 1.0  # request_timeout: the OSS SDK's connect and read timeouts too
MAX_ATTEMPTS = 4
PART = 100 * 1024  # OSS's smallest part: the big file goes up in 3 parts
SIZES = {"small-0": 20_000, "small-1": 30_000, "small-2": 40_000, "multipart": 2 * PART + 7}
Inject = tuple[tuple[str, ...], FaultKind, int | None, float]  # operations, kind, times, seconds


def applied(kind: str, at_least: int = 1) -> Callable[[RunningOss], bool]:
    """A state of the OSS emulator: at least `at_least` faults of `kind` met."""
    return lambda oss: oss.state.faults.applied[kind] >= at_least


@dataclass(frozen=True)
class Misbehaviour:
    name: str
    faults: tuple[Inject, ...] = ()
    #: The first run's exit code.
    exit_code: ExitCode = ExitCode.OK
    #: What the first run's stop (or error) must say.
    says: tuple[str, ...] = ()
    #: "refused": OSS's port refuses connections; "key": OSS refuses the key pair; "bucket": the
    #: bucket does not exist. From the start, or once `when` holds (then the faults are cleared).
    outage: str | None = None
    when: Callable[[RunningOss], bool] | None = None
    #: Most writes the emulator may see for one object, both runs together.
    writes: int = 1


UNAVAILABLE = ("OssUnavailable", "OSS at http://127.0.0.1:", f"bucket '{BUCKET}'", "nothing was marked failed")
HANG: Inject = (UPLOAD_OPERATIONS, "hang", None, 0.0)

ROWS = [
    Misbehaviour("refused", exit_code=ExitCode.INTERRUPTED, says=(*UNAVAILABLE, "the last with ConnectionError"),
                 outage="refused"),
    Misbehaviour("hang", (HANG,), ExitCode.INTERRUPTED, (*UNAVAILABLE, "the last with Timeout")),
    Misbehaviour("slow-past-the-timeout", ((UPLOAD_OPERATIONS, "slow", None, 3 * TIMEOUT),), ExitCode.INTERRUPTED,
                 (*UNAVAILABLE, "the last with Timeout"), writes=MAX_ATTEMPTS),
    Misbehaviour("slow-within-the-timeout", ((UPLOAD_OPERATIONS, "slow", 2, 0.2 * TIMEOUT),)),
    Misbehaviour("dropped-before-processing", ((UPLOAD_OPERATIONS, "drop", None, 0.0),), ExitCode.INTERRUPTED,
                 UNAVAILABLE),
    # Processed, then the answer lost, every time: the next attempt's HEAD finds the object.
    Misbehaviour("dropped-after-processing", ((("PutObject", "CompleteMultipartUpload"), "drop_after", None, 0.0),)),
    Misbehaviour("500-transient", ((UPLOAD_OPERATIONS, "500", 1, 0.0),)),
    Misbehaviour("500-past-the-budget", ((UPLOAD_OPERATIONS, "500", None, 0.0),), ExitCode.INTERRUPTED,
                 (*UNAVAILABLE, "HTTP 500")),
    Misbehaviour("2xx-garbage-body", ((UPLOAD_OPERATIONS, "garbage", None, 0.0),), ExitCode.INTERRUPTED,
                 (*UNAVAILABLE, "UnreadableResponse")),
    Misbehaviour("key-refused-at-start", exit_code=ExitCode.AUTH,
                 says=("OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET",), outage="key"),
    Misbehaviour("key-revoked-mid-run", (HANG,), ExitCode.AUTH,
                 ("OSS credentials refused", "SignatureDoesNotMatch", "fix OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET"),
                 outage="key",
                 when=applied("hang")),
    Misbehaviour("no-such-bucket-at-start", exit_code=ExitCode.USAGE, says=("upload.bucket", f"'{BUCKET}' does not"),
                 outage="bucket"),
    Misbehaviour("bucket-deleted-mid-run", (HANG,), ExitCode.INTERRUPTED, ("NoSuchBucket", "upload.bucket"),
                 outage="bucket", when=applied("hang")),
]


def test_the_table_covers_every_oss_misbehaviour_of_the_issue() -> None:
    """Refused, a hang, slow past the timeout, dropped after the request was sent, 500s transient
    and past the budget, a garbage 2xx, credentials refused and NoSuchBucket each have a row."""
    names = {row.name for row in ROWS}
    assert {"refused", "hang", "slow-past-the-timeout", "dropped-after-processing", "500-transient",
            "500-past-the-budget", "2xx-garbage-body", "key-refused-at-start", "no-such-bucket-at-start"} <= names


def _manifest(tmp: Path) -> Path:
    rows = []
    for name, size in SIZES.items():
        path = tmp / f"{name}.mp4"
        path.write_bytes((name.encode() * (size // len(name) + 1))[:size])
        rows.append({"id": name, "capability": "video_snapshot", "path": str(path)})
    return write_manifest(tmp / "m.jsonl", rows)


def _config(endpoint: str, oss_url: str) -> Config:
    return Config(endpoint=endpoint, time_scale=SCALE, request_timeout=TIMEOUT,
                  retry=RetryPolicy(base=0.2, max_delay=1.0, max_attempts=MAX_ATTEMPTS),
                  upload=UploadConfig(bucket=BUCKET, endpoint=oss_url, always=True, part_size=PART))


async def _run(tmp: Path, manifest: Path, emu: RunningEmulator, gate: Gate) -> tuple[ExitCode, str]:
    """The same command every time: (exit code, what the stop or the error said)."""
    files = RunFiles(tmp / "results.jsonl", tmp / "state")
    request = RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=_config(emu.url, gate.url))
    try:
        result = await run(request)
    except PipelineError as exc:  # stopped before the run started, as the CLI reports it
        return exit_code_for(exc), str(exc)
    return result.exit_code, result.reason or ""


def _break(oss: RunningOss, row: Misbehaviour, gate: Gate) -> None:
    if row.outage == "refused":
        gate.shut()
    elif row.outage == "key":
        oss.state.settings = dataclasses.replace(oss.state.settings, key_secret=REVOKED)
    elif row.outage == "bucket":
        oss.store.delete_bucket(BUCKET)


async def _settled(oss: RunningOss) -> None:
    """OSS comes back: no fault, the bucket and the key pair as configured, every request that
    was hung or slow finished (so what they stored is stored before anything is compared)."""
    oss.state.faults.clear()
    oss.state.settings = dataclasses.replace(oss.state.settings, key_secret=DEFAULT_OSS_KEY_SECRET)
    oss.store.create_bucket(BUCKET)
    while oss.state.active:  # noqa: ASYNC110 - a state of the server, not a duration
        await anyio.sleep(0.01)


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name) for row in ROWS])
async def test_every_oss_misbehaviour_then_oss_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          row: Misbehaviour) -> None:
    """OSS misbehaves one way during uploads: the run ends with the documented exit code and a
    message naming OSS, writes nothing FAILED, writes no object twice needlessly, submits no item
    twice, and once OSS is back the same command finishes every item."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", DEFAULT_OSS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", DEFAULT_OSS_KEY_SECRET)
    manifest = _manifest(tmp_path)
    emulator = EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE)
    async with start_emulator(emulator) as emu, start_oss(OssSettings(buckets=(BUCKET,))) as oss, \
            Gate(oss.port) as gate:
        emu.state.objects = oss.store
        for operations, kind, times, seconds in row.faults:
            oss.state.faults.inject(operations, kind, times=times, seconds=seconds)
        if row.outage is not None and row.when is None:
            _break(oss, row, gate)
        done = anyio.Event()
        reached = False

        async def watch() -> None:
            nonlocal reached
            assert row.when is not None
            while not row.when(oss):
                if done.is_set():
                    return
                await anyio.sleep(0.005)
            reached = True
            _break(oss, row, gate)
            oss.state.faults.clear()  # the hung upload ends now, and meets the outage when retried

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                if row.when is not None:
                    tg.start_soon(watch)
                code, said = await _run(tmp_path, manifest, emu, gate)
                done.set()
        if row.when is not None:
            assert reached, f"{row.name}: the run ended ({code!r}: {said}) before the fault showed"
        lines = read_results(tmp_path / "results.jsonl") if (tmp_path / "results.jsonl").exists() else []
        assert code == row.exit_code, (row.name, said, [line.get("error") for line in lines])
        assert all(text in said for text in row.says), (row.name, said)
        assert len(said) < 1500 and DEFAULT_OSS_KEY_SECRET not in said and REVOKED not in said, said
        assert [line for line in lines if line["status"] == "FAILED"] == [], f"{row.name}: FAILED lines"
        if row.exit_code == ExitCode.OK:
            assert len(lines) == len(SIZES)
        else:
            assert len(lines) < len(SIZES) or row.when is not None, lines

        # OSS comes back: the same command finishes the run, writing nothing already there again.
        await _settled(oss)
        if row.outage == "refused":
            await gate.open()
        for _operations, kind, _times, _seconds in row.faults:
            assert oss.state.faults.applied[kind] >= 1, f"{row.name}: the {kind} fault never bit"
        before = dict(oss.state.stored)
        if row.exit_code != ExitCode.OK:
            with anyio.fail_after(90):
                again, said = await _run(tmp_path, manifest, emu, gate)
            assert again == ExitCode.OK, (row.name, said)
        after = dict(oss.state.stored)
        counters: dict[str, Any] = emu.counters()
        completed = oss.state.counters["CompleteMultipartUpload"]
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, SIZES)
    assert sorted(line["id"] for line in lines) == sorted(SIZES)
    assert all(line["status"] == "SUCCESS" for line in lines), [line["error"] for line in lines]
    assert len(after) == len(SIZES) and completed >= 1, after  # one object per file, one of them multipart
    assert max(after.values()) <= row.writes, (row.name, after)
    assert all(after[key] == written for key, written in before.items()), (row.name, before, after)
    submissions = counters["submissions"]
    assert len(submissions) == len(SIZES) and max(submissions.values()) == 1, submissions
