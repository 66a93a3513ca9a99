"""The official OSS SDK (alibabacloud-oss-v2, its asyncio client), unchanged, works against the emulator's OSS."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import alibabacloud_oss_v2 as oss
import alibabacloud_oss_v2.aio as oss_aio
import pytest

from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.emulator.oss_sign import SignedRequest, verify_header_auth, verify_query_auth

KEY_ID, SECRET = "test-oss-id", "test-oss-secret"
BUCKET = "media"
PART = 100 * 1024  # OSS's smallest part size
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def oss_emu() -> AsyncIterator[RunningOss]:
    """The emulator's OSS app on a free port with a known AccessKey pair and one bucket."""
    async with start_oss(OssSettings(key_id=KEY_ID, key_secret=SECRET, buckets=(BUCKET,))) as running:
        yield running


def _client(emu: RunningOss, key_id: str = KEY_ID, secret: str = SECRET) -> oss_aio.AsyncClient:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(key_id, secret)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.url
    cfg.use_path_style = True
    cfg.retryer = oss.retry.NopRetryer()  # an error must show as itself, not after retries
    return oss_aio.AsyncClient(cfg)


@pytest.fixture
async def client(oss_emu: RunningOss) -> AsyncIterator[oss_aio.AsyncClient]:
    """The SDK's asyncio client pointed at the emulator, path-style, signed with the right key."""
    c = _client(oss_emu)
    try:
        yield c
    finally:
        await c.close()


async def test_put_head_get_round_trip(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """PutObject stores the bytes, HeadObject gives their length and MD5 ETag, GetObject returns them."""
    body = b"hello oss" * 1000
    put = await client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="dir/a b.bin", body=body))
    md5 = f'"{hashlib.md5(body).hexdigest().upper()}"'
    assert put.etag == md5
    head = await client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="dir/a b.bin"))
    assert (head.content_length, head.etag) == (len(body), md5)
    got = await client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="dir/a b.bin"))
    assert await got.body.read() == body
    path = oss_emu.store.get(BUCKET, "dir/a b.bin")
    assert path is not None and path.read_bytes() == body
    assert oss_emu.store.get(BUCKET, "missing") is None and oss_emu.store.holds_bucket(BUCKET)


async def test_head_missing_object_is_404_no_such_key(client: oss_aio.AsyncClient) -> None:
    """HEAD of an absent object is 404 NoSuchKey, read by the SDK from the x-oss-err header."""
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="nope"))
    err = caught.value.unwrap()
    assert isinstance(err, oss.exceptions.ServiceError)
    assert (err.status_code, err.code) == (404, "NoSuchKey") and err.request_id


async def test_three_part_multipart_upload(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """Initiate, three UploadParts and Complete give one object of the parts' bytes in order."""
    parts = [bytes([i]) * PART for i in (1, 2)] + [b"tail"]
    init = await client.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket=BUCKET, key="mp.bin"))
    assert init.upload_id
    done = []
    for number, data in enumerate(parts, start=1):
        up = await client.upload_part(oss.UploadPartRequest(
            bucket=BUCKET, key="mp.bin", upload_id=init.upload_id, part_number=number, body=data))
        assert up.etag == f'"{hashlib.md5(data).hexdigest().upper()}"'
        done.append(oss.UploadPart(part_number=number, etag=up.etag))
    listed = await client.list_parts(oss.ListPartsRequest(bucket=BUCKET, key="mp.bin", upload_id=init.upload_id))
    assert [(p.part_number, p.size) for p in listed.parts] == [(1, PART), (2, PART), (3, 4)]
    result = await client.complete_multipart_upload(oss.CompleteMultipartUploadRequest(
        bucket=BUCKET, key="mp.bin", upload_id=init.upload_id,
        complete_multipart_upload=oss.CompleteMultipartUpload(parts=done)))
    assert result.etag is not None and result.etag.endswith('-3"')
    head = await client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="mp.bin"))
    assert head.content_length == 2 * PART + 4
    stored = oss_emu.store.get(BUCKET, "mp.bin")
    assert stored is not None and stored.read_bytes() == b"".join(parts)
    assert oss_emu.state.counters["UploadPart"] == 3


async def test_abort_forgets_the_upload(client: oss_aio.AsyncClient) -> None:
    """After AbortMultipartUpload, a part for that upload id is 404 NoSuchUpload."""
    init = await client.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket=BUCKET, key="ab.bin"))
    await client.abort_multipart_upload(oss.AbortMultipartUploadRequest(
        bucket=BUCKET, key="ab.bin", upload_id=init.upload_id))
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.upload_part(oss.UploadPartRequest(
            bucket=BUCKET, key="ab.bin", upload_id=init.upload_id, part_number=1, body=b"x"))
    assert caught.value.unwrap().code == "NoSuchUpload"


async def test_presigned_get_fetches_with_plain_http(client: oss_aio.AsyncClient) -> None:
    """A presigned GET URL from the SDK fetches the object with a plain aiohttp GET, no headers."""
    await client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="p/img.png", body=b"PNGDATA"))
    signed = await client.presign(oss.GetObjectRequest(bucket=BUCKET, key="p/img.png"), expires=timedelta(minutes=5))
    assert "x-oss-signature=" in signed.url and "x-oss-credential=" in signed.url
    async with aiohttp.ClientSession() as http, http.get(signed.url) as resp:
        assert resp.status == 200 and await resp.read() == b"PNGDATA"
    tampered = signed.url.replace("p/img.png", "p/other.png")
    async with aiohttp.ClientSession() as http, http.get(tampered) as resp:
        assert resp.status == 403 and "SignatureDoesNotMatch" in await resp.text()


async def test_wrong_secret_is_403_signature_does_not_match(oss_emu: RunningOss) -> None:
    """A request signed with the wrong secret is refused: 403 SignatureDoesNotMatch, as XML with a request id."""
    bad = _client(oss_emu, secret="not-the-secret")
    try:
        with pytest.raises(oss.exceptions.OperationError) as caught:
            await bad.put_object(oss.PutObjectRequest(bucket=BUCKET, key="x", body=b"data"))
    finally:
        await bad.close()
    err = caught.value.unwrap()
    assert (err.status_code, err.code) == (403, "SignatureDoesNotMatch")
    assert err.request_id and err.headers.get("x-oss-request-id") == err.request_id
    assert oss_emu.store.get(BUCKET, "x") is None


async def test_wrong_key_id_is_403_invalid_access_key_id(oss_emu: RunningOss) -> None:
    """A request with an unknown AccessKey id is refused: 403 InvalidAccessKeyId."""
    bad = _client(oss_emu, key_id="who-is-this")
    try:
        with pytest.raises(oss.exceptions.OperationError) as caught:
            await bad.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="x"))
    finally:
        await bad.close()
    err = caught.value.unwrap()
    assert (err.status_code, err.code) == (403, "InvalidAccessKeyId")


async def test_unsigned_request_is_refused(oss_emu: RunningOss) -> None:
    """A plain GET without any signature is 403 AccessDenied, with OSS's XML error body."""
    async with aiohttp.ClientSession() as http, http.get(f"{oss_emu.url}/{BUCKET}/k") as resp:
        body = await resp.text()
        assert resp.status == 403 and resp.headers.get("x-oss-request-id")
    for tag in ("<Code>AccessDenied</Code>", "<Message>", "<RequestId>", "<HostId>", "<EC>"):
        assert tag in body


def test_expired_presigned_url_is_refused() -> None:
    """A presigned URL past its x-oss-expires is AccessDenied even with a correct signature."""
    signer = oss.signer.SignerV4()
    request = oss.types.HttpRequest("GET", "http://127.0.0.1/b/k")
    ctx = oss.types.SigningContext(
        product="oss", region="cn-hangzhou", bucket="b", key="k", request=request,
        credentials=oss.credentials.Credentials(KEY_ID, SECRET),
        signing_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    ctx.auth_method_query = True  # the SDK's presigner sets these two on the context
    ctx.expiration_time = datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc)
    signer.sign(ctx)
    raw_query = request.url.partition("?")[2]
    signed = SignedRequest("GET", "b", "k", raw_query, {})
    inside = datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
    assert verify_query_auth(signed, KEY_ID, SECRET, now=inside) is None
    late = verify_query_auth(signed, KEY_ID, SECRET, now=inside + timedelta(minutes=5))
    assert late is not None and late.code == "AccessDenied"


def test_header_signature_covers_signed_headers() -> None:
    """Changing a signed x-oss-* header after signing breaks the signature; the intact request passes."""
    request = oss.types.HttpRequest("PUT", "http://127.0.0.1/b/k?partNumber=1&uploadId=U1",
                                    headers={"x-oss-meta-a": "1", "Content-Type": "video/mp4"})
    ctx = oss.types.SigningContext(
        product="oss", region="cn-hangzhou", bucket="b", key="k", request=request,
        credentials=oss.credentials.Credentials(KEY_ID, SECRET),
    )
    oss.signer.SignerV4().sign(ctx)
    headers = dict(request.headers)
    raw_query = request.url.partition("?")[2]
    assert verify_header_auth(SignedRequest("PUT", "b", "k", raw_query, headers), KEY_ID, SECRET) is None
    changed = {**headers, "x-oss-meta-a": "2"}
    problem = verify_header_auth(SignedRequest("PUT", "b", "k", raw_query, changed), KEY_ID, SECRET)
    assert problem is not None and problem.code == "SignatureDoesNotMatch"


async def test_cli_serves_oss_beside_the_service() -> None:
    """`emulator --oss-port 0 --oss-key-id --oss-key-secret` serves OSS that the SDK can write to and read from."""
    argv = [sys.executable, "-m", "pipeline", "emulator", "--port", "0", "--oss-port", "0",
            "--oss-key-id", KEY_ID, "--oss-key-secret", SECRET, "--oss-bucket", BUCKET]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        lines = [(await proc.stdout.readline()).decode() for _ in range(3)]
        assert lines[0].startswith("emulator listening on http://"), lines
        assert lines[1].startswith("emulator OSS listening on http://"), lines
        assert SECRET not in "".join(lines)
        url = lines[1].split()[4]
        cfg = oss.config.load_default()
        cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(KEY_ID, SECRET)
        cfg.region, cfg.endpoint, cfg.use_path_style = "cn-hangzhou", url, True
        async with oss_aio.AsyncClient(cfg) as client:
            await client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="cli.txt", body=b"via cli"))
            got = await client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="cli.txt"))
            assert await got.body.read() == b"via cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0
