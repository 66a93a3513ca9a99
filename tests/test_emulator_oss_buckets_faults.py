"""The emulator's OSS holds only the buckets that were created, as OSS does, and injects the
faults a network and a server can produce, each as a client meets it on the wire."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import alibabacloud_oss_v2 as oss
import alibabacloud_oss_v2.aio as oss_aio
import pytest
from support import REPO, cli_env

from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_faults import FaultKind
from pipeline.emulator.oss_server import RunningOss, start_oss

KEY_ID, SECRET = "bucket-test-id", "bucket-test-secret"
TIMEOUT = 1.0  # the client's read timeout: a hung request gives up after it


@pytest.fixture
async def oss_emu() -> AsyncIterator[RunningOss]:
    """The emulator's OSS with one bucket, `media`, declared at start."""
    async with start_oss(OssSettings(key_id=KEY_ID, key_secret=SECRET, buckets=("media",))) as running:
        yield running


@pytest.fixture
async def client(oss_emu: RunningOss) -> AsyncIterator[oss_aio.AsyncClient]:
    """The SDK's asyncio client, no retries of its own, a short read timeout."""
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(KEY_ID, SECRET)
    cfg.region, cfg.endpoint, cfg.use_path_style = "cn-hangzhou", oss_emu.url, True
    cfg.retryer = oss.retry.NopRetryer()
    cfg.readwrite_timeout = cfg.connect_timeout = TIMEOUT
    c = oss_aio.AsyncClient(cfg)
    try:
        yield c
    finally:
        await c.close()


def _service_error(exc: BaseException) -> oss.exceptions.ServiceError:
    inner = exc.unwrap() if isinstance(exc, oss.exceptions.OperationError) else exc
    assert isinstance(inner, oss.exceptions.ServiceError), repr(exc)
    return inner


async def test_a_bucket_never_created_is_no_such_bucket(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """PutObject, HeadObject and a multipart start in a bucket nobody created (a misspelling)
    answer 404 NoSuchBucket, as OSS does, and store nothing; the declared bucket works."""
    calls = [
        client.put_object(oss.PutObjectRequest(bucket="meida", key="a.mp4", body=b"x")),
        client.head_object(oss.HeadObjectRequest(bucket="meida", key="a.mp4")),
        client.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket="meida", key="a.mp4")),
    ]
    for call in calls:
        with pytest.raises(oss.exceptions.OperationError) as caught:
            await call
        err = _service_error(caught.value)
        assert (err.status_code, err.code) == (404, "NoSuchBucket")
    assert not oss_emu.store.holds_bucket("meida") and oss_emu.store.get("meida", "a.mp4") is None
    await client.put_object(oss.PutObjectRequest(bucket="media", key="a.mp4", body=b"x"))
    assert oss_emu.store.get("media", "a.mp4") is not None


async def test_put_bucket_from_the_sdk_creates_it_once(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """The SDK's put_bucket creates a bucket objects can then go to; creating it again is 409
    BucketAlreadyExists."""
    await client.put_bucket(oss.PutBucketRequest(bucket="fresh-bucket"))
    await client.put_object(oss.PutObjectRequest(bucket="fresh-bucket", key="k", body=b"data"))
    assert oss_emu.store.get("fresh-bucket", "k") is not None
    with pytest.raises(oss.exceptions.OperationError) as again:
        await client.put_bucket(oss.PutBucketRequest(bucket="fresh-bucket"))
    assert (_service_error(again.value).status_code, _service_error(again.value).code) == (409, "BucketAlreadyExists")
    assert oss_emu.state.counters["PutBucket"] == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--oss-port", "0", "--oss-bucket", "Bad_Name"], "not a valid bucket name"),
    (["--oss-bucket", "media"], "--oss-bucket needs --oss-port"),
])
def test_the_cli_refuses_a_bucket_it_cannot_serve(args: list[str], message: str) -> None:
    """`emulator --oss-bucket` with a name OSS refuses, or without `--oss-port`, exits 2 with one line."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "emulator", "--port", "0", *args], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


@dataclass(frozen=True)
class Seen:
    """What a PutObject meets under one fault: the SDK's error (None: a 2xx), whether it was stored."""

    name: str
    kind: FaultKind
    error: str | None  # "ServiceError:<status>", "RequestError" (no answer) or "ResponseError" (timed out)
    stored: bool
    seconds: float = 0.0


FAULTS = [
    Seen("503", "503", "ServiceError:503", stored=False),
    Seen("500", "500", "ServiceError:500", stored=False),
    Seen("drop", "drop", "RequestError", stored=False),
    Seen("drop_after", "drop_after", "RequestError", stored=True),
    Seen("hang", "hang", "ResponseError", stored=False),
    Seen("slow-within-the-timeout", "slow", None, stored=True, seconds=0.1),
    Seen("slow-past-the-timeout", "slow", "ResponseError", stored=False, seconds=3 * TIMEOUT),
    Seen("garbage", "garbage", None, stored=False),
]


@pytest.mark.parametrize("seen", [pytest.param(s, id=s.name) for s in FAULTS])
async def test_each_fault_as_the_client_meets_it(client: oss_aio.AsyncClient, oss_emu: RunningOss,
                                                 seen: Seen) -> None:
    """One PutObject under each fault kind: the SDK sees the documented answer (an error status,
    no answer, a timeout, or a 2xx), the object is stored only where the fault says the request
    was processed, the fault is counted, and the next request (one-shot fault) is served."""
    oss_emu.state.faults.inject("PutObject", seen.kind, times=1, seconds=seen.seconds)
    body = b"b" * 1000
    error: str | None = None
    try:
        await client.put_object(oss.PutObjectRequest(bucket="media", key="f", body=body))
    except oss.exceptions.OperationError as exc:
        inner = exc.unwrap()
        error = type(inner).__name__
        if isinstance(inner, oss.exceptions.ServiceError):
            error += f":{inner.status_code}"
    if seen.kind in ("hang", "slow"):
        oss_emu.state.faults.clear()  # a hung request ends; wait for every request to be done
        while oss_emu.state.active:  # noqa: ASYNC110 - a state of the server, not a duration
            await asyncio.sleep(0.01)
    assert error == seen.error
    assert (oss_emu.store.get("media", "f") is not None) is seen.stored
    assert oss_emu.state.faults.applied[seen.kind] == 1
    put = await client.put_object(oss.PutObjectRequest(bucket="media", key="after", body=body))
    assert put.status_code == 200 and oss_emu.store.get("media", "after") is not None


async def test_a_fault_until_cleared_applies_to_every_request(client: oss_aio.AsyncClient,
                                                              oss_emu: RunningOss) -> None:
    """`times=None` makes every request of the operation fail until `clear()`, any operation with `*`."""
    oss_emu.state.faults.inject("*", "503", times=None)
    for key in ("a", "b", "c"):
        with pytest.raises(oss.exceptions.OperationError):
            await client.head_object(oss.HeadObjectRequest(bucket="media", key=key))
    assert oss_emu.state.faults.applied["503"] == 3
    oss_emu.state.faults.clear()
    await client.put_object(oss.PutObjectRequest(bucket="media", key="a", body=b"x"))
    assert oss_emu.state.stored[("media", "a")] == 1
