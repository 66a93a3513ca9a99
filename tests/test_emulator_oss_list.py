"""The emulator answers ListObjectsV2 as OSS does, checked through the official SDK's paginator
(alibabacloud-oss-v2, its asyncio client, unchanged), and fills its store cheaply for benchmarks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import aiohttp
import alibabacloud_oss_v2 as oss
import alibabacloud_oss_v2.aio as oss_aio
import pytest

from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_list import decode_token, encode_token, list_page
from pipeline.emulator.oss_server import RunningOss, start_oss

KEY_ID, SECRET = "test-oss-id", "test-oss-secret"
BUCKET = "media"
BODY = b"listed"


@pytest.fixture
async def oss_emu() -> AsyncIterator[RunningOss]:
    """The emulator's OSS app on a free port with a known AccessKey pair and one bucket."""
    async with start_oss(OssSettings(key_id=KEY_ID, key_secret=SECRET, buckets=(BUCKET,))) as running:
        yield running


def _client(emu: RunningOss, secret: str = SECRET) -> oss_aio.AsyncClient:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(KEY_ID, secret)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.url
    cfg.use_path_style = True
    cfg.retryer = oss.retry.NopRetryer()
    return oss_aio.AsyncClient(cfg)


@pytest.fixture
async def client(oss_emu: RunningOss) -> AsyncIterator[oss_aio.AsyncClient]:
    """The SDK's asyncio client pointed at the emulator, path-style, signed with the right key."""
    c = _client(oss_emu)
    try:
        yield c
    finally:
        await c.close()


#: A tree with nested "directories", keys that sort around '/', a folder marker object and
#: characters the XML and the URL encoding must carry (space, %, +, &, <, non-ASCII).
KEYS = sorted({
    *(f"photos/2024/{i:03d}.jpg" for i in range(23)),
    *(f"photos/2025/q{q}/{i:02d}.png" for q in range(1, 4) for i in range(5)),
    *(f"videos/{i}.mp4" for i in range(11)),
    "photos/", "photos.txt", "photos-old/a.jpg", "top.jpg", "a b/c&d<e>.jpg", "100%/x+y.jpg",
    "日本/写真.jpg", "zz/deep/er/still.mp3",
})


async def _put_all(client: oss_aio.AsyncClient, keys: list[str]) -> None:
    for key in keys:
        await client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=key, body=BODY))


def _expected(keys: list[str], prefix: str, delimiter: str) -> list[str]:
    """What a listing yields, worked out the naive way: every key under `prefix`, in UTF-8 byte
    order, a key holding `delimiter` after the prefix replaced by its common prefix, once."""
    out: list[str] = []
    for key in sorted(keys, key=lambda k: k.encode("utf-8")):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common not in out:
                out.append(common)
        else:
            out.append(key)
    return out


async def _pages(client: oss_aio.AsyncClient, **request: object) -> list[oss.ListObjectsV2Result]:
    limit = request.pop("limit", None)
    paginator = client.list_objects_v2_paginator(limit=limit) if limit else client.list_objects_v2_paginator()
    return [page async for page in paginator.iter_page(oss.ListObjectsV2Request(bucket=BUCKET, **request))]


def _entries(page: oss.ListObjectsV2Result) -> list[str]:
    keys = [obj.key for obj in page.contents or []]
    prefixes = [p.prefix for p in page.common_prefixes or []]
    return sorted(keys + prefixes, key=lambda k: k.encode("utf-8"))


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(("prefix", "delimiter"), [("", "/"), ("photos/", "/"), ("", ""), ("photos/2025/", ""),
                                                   ("photos", "/"), ("nothing-here/", "/")])
async def test_paginator_walks_every_page_with_a_delimiter(client: oss_aio.AsyncClient, prefix: str, delimiter: str,
                                                           limit: int) -> None:
    """Across pages of `limit` entries, the SDK's paginator gets each key and common prefix under
    the prefix exactly once, in order, every page but the last truncated, KeyCount its size."""
    await _put_all(client, KEYS)
    request: dict[str, object] = {"prefix": prefix, "limit": limit}
    if delimiter:
        request["delimiter"] = delimiter
    pages = await _pages(client, **request)
    expected = _expected(KEYS, prefix, delimiter)
    assert [e for page in pages for e in _entries(page)] == expected
    assert all(page.key_count == len(_entries(page)) <= limit for page in pages)
    assert [page.is_truncated for page in pages] == [True] * (len(pages) - 1) + [False]
    assert len(pages) == max(1, -(-len(expected) // limit))
    assert all((page.next_continuation_token is not None) == page.is_truncated for page in pages)
    assert all((page.prefix or "") == prefix and page.max_keys == limit for page in pages)


async def test_each_object_carries_etag_size_and_last_modified(client: oss_aio.AsyncClient) -> None:
    """Contents give the key, the quoted MD5 ETag, the size, an ISO 8601 LastModified, Normal, Standard."""
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    await client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="dir/a.jpg", body=b"abc" * 10))
    [page] = await _pages(client, prefix="dir/")
    [obj] = page.contents
    assert obj.key == "dir/a.jpg" and obj.size == 30
    assert obj.etag == f'"{hashlib.md5(b"abc" * 10).hexdigest().upper()}"'
    assert before <= obj.last_modified <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert (obj.object_type, obj.storage_class, obj.owner) == ("Normal", "Standard", None)
    [owned] = (await _pages(client, prefix="dir/", fetch_owner=True))[0].contents
    assert owned.owner is not None and owned.owner.id


async def test_default_page_is_100_keys(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """Without max-keys a page holds 100 entries, as on OSS."""
    oss_emu.store.fill(BUCKET, (f"k/{i:04d}" for i in range(250)), b"x")
    pages = await _pages(client)
    assert [page.key_count for page in pages] == [100, 100, 50]
    assert pages[0].max_keys == 100


async def test_start_after_and_a_continuation_token_resume_the_listing(client: oss_aio.AsyncClient) -> None:
    """start-after lists the keys after it; a page's NextContinuationToken resumes after its last entry."""
    await _put_all(client, KEYS)
    after = await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, start_after="photos/2024/020.jpg",
                                                                  prefix="photos/2024/"))
    assert [o.key for o in after.contents] == ["photos/2024/021.jpg", "photos/2024/022.jpg"]
    assert after.start_after == "photos/2024/020.jpg"
    first = await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, max_keys=2, delimiter="/",
                                                                  prefix="photos/"))
    # "photos/" itself is an object (a folder marker): under the prefix "photos/" it is a key.
    assert ([o.key for o in first.contents], [p.prefix for p in first.common_prefixes]) == (["photos/"],
                                                                                            ["photos/2024/"])
    assert first.is_truncated
    second = await client.list_objects_v2(oss.ListObjectsV2Request(
        bucket=BUCKET, max_keys=2, delimiter="/", prefix="photos/", continuation_token=first.next_continuation_token,
        start_after="zzz"))  # the token wins over start-after
    assert second.continuation_token == first.next_continuation_token
    assert _entries(second) == ["photos/2025/"] and not second.is_truncated and second.key_count == 1


async def test_keys_with_special_characters_round_trip(client: oss_aio.AsyncClient) -> None:
    """With encoding-type=url (which the SDK always asks for) keys holding spaces, %, +, &, < and
    non-ASCII come back exactly as stored, and in UTF-8 byte order."""
    keys = ["a b/c&d<e>.jpg", "100%/x+y.jpg", "日本/写真.jpg", "é.jpg", "z.jpg", "~tilde", "Z.jpg"]
    await _put_all(client, keys)
    pages = await _pages(client, limit=2)
    assert [o.key for page in pages for o in page.contents] == sorted(keys, key=lambda k: k.encode())
    assert all(page.encoding_type == "url" for page in pages)


async def test_a_missing_bucket_is_no_such_bucket(client: oss_aio.AsyncClient) -> None:
    """Listing a bucket that was never created is 404 NoSuchBucket, as OSS answers."""
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.list_objects_v2(oss.ListObjectsV2Request(bucket="no-such-bucket"))
    err = caught.value.unwrap()
    assert (err.status_code, err.code) == (404, "NoSuchBucket")


@pytest.mark.parametrize("max_keys", [0, 1001, -5])
async def test_a_bad_max_keys_is_invalid_argument(client: oss_aio.AsyncClient, max_keys: int) -> None:
    """max-keys outside 1..1000 is 400 InvalidArgument, naming the parameter."""
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, max_keys=max_keys))
    err = caught.value.unwrap()
    assert (err.status_code, err.code) == (400, "InvalidArgument") and "max-keys" in err.message


async def test_a_forged_continuation_token_is_invalid_argument(client: oss_aio.AsyncClient) -> None:
    """A token this server did not issue is refused, not read as a place to start from."""
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, continuation_token="!!not-base64!!"))
    assert caught.value.unwrap().code == "InvalidArgument"


async def test_a_listing_signed_with_the_wrong_secret_is_refused(oss_emu: RunningOss) -> None:
    """The listing's query is part of what is signed: a wrong secret is 403 SignatureDoesNotMatch."""
    wrong = _client(oss_emu, secret="not-the-secret")
    try:
        with pytest.raises(oss.exceptions.OperationError) as caught:
            await wrong.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, prefix="a b/"))
    finally:
        await wrong.close()
    assert (caught.value.unwrap().status_code, caught.value.unwrap().code) == (403, "SignatureDoesNotMatch")


async def test_fill_stores_many_objects_without_a_request_each(client: oss_aio.AsyncClient,
                                                                oss_emu: RunningOss) -> None:
    """The fill route stores `count` objects sharing one body file; they list, read and delete
    like any other, and deleting one leaves the others' bytes."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{oss_emu.url}/_emulator/oss/fill",
                             json={"bucket": "bench", "key": "cat/{n}.jpg", "count": 1200, "size": 5}) as resp:
            assert resp.status == 200 and await resp.json() == {"stored": 1200}
        async with http.post(f"{oss_emu.url}/_emulator/oss/fill", json={"bucket": "bench", "key": "no-n"}) as resp:
            assert resp.status == 400 and "count" in json.dumps(await resp.json())
    paginator = client.list_objects_v2_paginator(limit=1000)
    pages = [p async for p in paginator.iter_page(oss.ListObjectsV2Request(bucket="bench"))]
    keys = [o.key for p in pages for o in p.contents]
    assert len(keys) == 1200 and keys[0] == "cat/0000.jpg" and keys[-1] == "cat/1199.jpg"
    assert {o.size for p in pages for o in p.contents} == {5}
    await client.delete_object(oss.DeleteObjectRequest(bucket="bench", key="cat/0000.jpg"))
    got = await client.get_object(oss.GetObjectRequest(bucket="bench", key="cat/0001.jpg"))
    assert await got.body.read() == b"xxxxx"
    assert oss_emu.store.stat("bench", "cat/0000.jpg") is None


@pytest.mark.parametrize("marker", ["", "photos/", "日本/写真.jpg", "a\udc80b"])
def test_tokens_round_trip(marker: str) -> None:
    """A continuation token gives back the marker it was made from, whatever its characters."""
    assert decode_token(encode_token(marker)) == marker


def test_a_page_boundary_on_a_common_prefix_does_not_repeat_it() -> None:
    """A page that ends on a common prefix resumes past every key under it (pure table check)."""
    keys = ["a/1", "a/2", "b", "c/1", "c/2", "d"]
    first = list_page(keys, delimiter="/", max_keys=1)
    assert (first.keys, first.prefixes, first.truncated, first.next_marker) == ([], ["a/"], True, "a/")
    rest = list_page(keys, delimiter="/", marker="a/", max_keys=10)
    assert (rest.keys, rest.prefixes, rest.truncated) == (["b", "d"], ["c/"], False)
    assert list_page(keys, delimiter="/", start_after="a/", max_keys=10).prefixes == ["a/", "c/"]


async def test_a_fault_can_wait_for_the_nth_request(client: oss_aio.AsyncClient, oss_emu: RunningOss) -> None:
    """inject(after=1) serves the next request as usual and fails the one after it, so a test can
    break a listing's second page however far ahead the client fetches."""
    oss_emu.state.inject("ListObjectsV2", "503", times=1, after=1)
    await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET))
    with pytest.raises(oss.exceptions.OperationError) as caught:
        await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET))
    assert caught.value.unwrap().status_code == 503
    await client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET))
    assert oss_emu.state.faults.applied["503"] == 1
