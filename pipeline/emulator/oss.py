"""The emulator's OSS subset: path-style ``/{bucket}/{key}`` object routes with V4 signatures.

Operations (as the ``alibabacloud-oss-v2`` SDK sends them; see docs/protocol.md, OSS):

=========================  ==========================================================
PutBucket                  ``PUT /b`` (the SDK's ``put_bucket``)
PutObject                  ``PUT /b/k``
HeadObject / GetObject     ``HEAD`` / ``GET /b/k`` (GET also as a presigned URL)
DeleteObject               ``DELETE /b/k``
ListObjectsV2              ``GET /b?list-type=2`` (:mod:`.oss_list`: prefix, delimiter, tokens, max-keys)
InitiateMultipartUpload    ``POST /b/k?uploads``                 -> XML ``UploadId``
UploadPart                 ``PUT /b/k?partNumber=N&uploadId=U``  -> ``ETag``
ListParts                  ``GET /b/k?uploadId=U`` (the SDK's uploader resumes with it)
CompleteMultipartUpload    ``POST /b/k?uploadId=U`` with ``<CompleteMultipartUpload>``
AbortMultipartUpload       ``DELETE /b/k?uploadId=U``
=========================  ==========================================================

Every request must be signed with the configured AccessKey pair (:mod:`.oss_sign`); errors
are OSS's XML ``<Error>`` with an ``x-oss-request-id`` header (for HEAD, base64 in ``x-oss-err``,
as OSS does, since a HEAD answer has no body). A bucket must exist, as on OSS: created by
PutBucket or named in :attr:`OssSettings.buckets` (``emulator --oss-bucket``); an object
operation on any other bucket answers 404 ``NoSuchBucket``. :attr:`OssState.counters` counts
requests per operation, :attr:`OssState.stored` the objects written per (bucket, key), and
:attr:`OssState.faults` (:mod:`.oss_faults`) makes requests fail in the ways a network and a
server can, for retry and outage tests. ``POST /_emulator/oss/fill`` (no signature, like the
service's control routes) stores many small objects at once for a benchmark (:func:`fill_route`).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

from aiohttp import web

from .oss_faults import GARBAGE_BODY, FaultKind, OssFault, OssFaults
from .oss_list import ListingError, list_objects_v2
from .oss_sign import SignedRequest, verify_header_auth, verify_query_auth
from .oss_store import NoSuchUpload, ObjectStore, StoredObject, bucket_name_problem
from .settings import DEFAULT_OSS_KEY_ID, DEFAULT_OSS_KEY_SECRET

__all__ = ["DEFAULT_OSS_KEY_ID", "DEFAULT_OSS_KEY_SECRET", "OSS_STATE", "OssSettings", "OssState", "create_oss_app"]

BODY_CHUNK = 256 * 1024  # bytes read from a request body at a time, straight to disk
#: Operations that write an object: counted in `OssState.stored` when they succeed.
WRITES = ("PutObject", "CompleteMultipartUpload")


@dataclass(frozen=True)
class OssSettings:
    """The AccessKey pair requests must be signed with, where objects live (None: a temp dir),
    and the buckets that exist from the start (others must be created with PutBucket)."""

    key_id: str = DEFAULT_OSS_KEY_ID
    key_secret: str = DEFAULT_OSS_KEY_SECRET
    root: Path | None = None
    buckets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.buckets:
            problem = bucket_name_problem(name)
            if problem is not None:
                raise ValueError(problem)

    def __repr__(self) -> str:  # the secret stays out of logs and test output
        return f"OssSettings(key_id={self.key_id!r}, root={self.root!r}, buckets={self.buckets!r})"


@dataclass
class OssState:
    """The live state of one OSS app: its store, request counts and injected faults."""

    settings: OssSettings
    store: ObjectStore
    counters: Counter[str] = field(default_factory=Counter)  # operation name -> requests seen
    stored: Counter[tuple[str, str]] = field(default_factory=Counter)  # (bucket, key) -> objects written
    faults: OssFaults = field(default_factory=OssFaults)
    active: int = 0  # requests being handled now (a slow or hung one included)

    def inject(self, operation: str, fault: FaultKind = "503", times: int | None = 1, after: int = 0) -> None:
        """Make ``times`` requests of ``operation``, after the next ``after``, meet ``fault``
        (see :mod:`.oss_faults`)."""
        self.faults.inject(operation, fault, times, after=after)


OSS_STATE: web.AppKey[OssState] = web.AppKey("oss_state", OssState)


class OssError(Exception):
    """An OSS error answer: status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status, self.code, self.message = status, code, message


def _request_id() -> str:
    return uuid.uuid4().hex[:24].upper()


def _xml(root: str, children: list[tuple[str, object]] | None = None) -> ET.Element:
    element = ET.Element(root)
    for name, value in children or []:
        if isinstance(value, ET.Element):
            element.append(value)
        else:
            ET.SubElement(element, name).text = str(value)
    return element


def _xml_response(element: ET.Element, request_id: str, status: int = 200) -> web.Response:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)
    return web.Response(
        body=body, status=status, content_type="application/xml", headers={"x-oss-request-id": request_id}
    )


def _error_response(request: web.Request, error: OssError, request_id: str) -> web.Response:
    element = _xml(
        "Error",
        [("Code", error.code), ("Message", error.message), ("RequestId", request_id),
         ("HostId", request.host), ("EC", "0000-00000000")],
    )
    if request.method == "HEAD":
        payload = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)
        return web.Response(
            status=error.status,
            headers={"x-oss-request-id": request_id, "x-oss-err": base64.b64encode(payload).decode()},
        )
    return _xml_response(element, request_id, error.status)


def _operation(method: str, query: dict[str, str], has_key: bool) -> str:
    """The OSS operation a request is, from its method and sub-resources."""
    if not has_key:
        if method == "GET" and query.get("list-type") == "2":
            return "ListObjectsV2"
        return "PutBucket" if method == "PUT" and not query else "Unsupported"
    if method == "PUT":
        return "UploadPart" if "uploadId" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "InitiateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in query else "Unsupported"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    return "HeadObject" if method == "HEAD" else "Unsupported"


def _check_signature(request: web.Request, bucket: str, key: str, settings: OssSettings) -> None:
    signed = SignedRequest(request.method, bucket, key or None, request.rel_url.raw_query_string, request.headers)
    presigned = "x-oss-signature" in request.rel_url.query
    verify = verify_query_auth if presigned else verify_header_auth
    problem = verify(signed, settings.key_id, settings.key_secret)
    if problem is not None:
        raise OssError(problem.status, problem.code, problem.message)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        yield chunk


def _object_headers(obj: StoredObject, request_id: str) -> dict[str, str]:
    modified = datetime.fromtimestamp(obj.modified, timezone.utc)
    return {
        "ETag": obj.etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Content-Type": "application/octet-stream",
        "x-oss-request-id": request_id,
        "x-oss-object-type": "Multipart" if "-" in obj.etag else "Normal",
    }


async def _send_object(request: web.Request, obj: StoredObject, request_id: str) -> web.StreamResponse:
    response = web.StreamResponse(headers=_object_headers(obj, request_id))
    response.content_length = obj.size
    await response.prepare(request)
    if request.method == "GET":
        with obj.path.open("rb") as src:  # streamed a chunk at a time, never read whole
            while chunk := src.read(BODY_CHUNK):
                await response.write(chunk)
        await response.write_eof()
    return response


def _part_list(body: bytes) -> list[tuple[int, str]]:
    try:
        root = ET.fromstring(body)
        return [(int(p.findtext("PartNumber", "")), p.findtext("ETag", "")) for p in root.iter("Part")]
    except (ET.ParseError, ValueError) as exc:
        raise OssError(400, "MalformedXML", f"the part list is not valid XML: {exc}") from exc


def _iso(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def _dispatch(
    request: web.Request, state: OssState, *, op: str, bucket: str, key: str, rid: str
) -> web.StreamResponse:
    store, query = state.store, request.rel_url.query
    head = {"x-oss-request-id": rid}
    if op == "PutBucket":
        problem = bucket_name_problem(bucket)
        if problem is not None:
            raise OssError(400, "InvalidBucketName", problem)
        await request.read()  # an optional CreateBucketConfiguration: every bucket is alike here
        if not store.create_bucket(bucket):
            raise OssError(409, "BucketAlreadyExists", "The requested bucket name is not available.")
        return web.Response(headers={**head, "Location": f"/{bucket}"})
    if not store.holds_bucket(bucket):
        raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
    if op == "ListObjectsV2":
        try:
            listing = list_objects_v2(bucket, query, store.sorted_keys(bucket), lambda key: store.stat(bucket, key))
        except ListingError as exc:
            raise OssError(400, "InvalidArgument", str(exc)) from exc
        return web.Response(body=listing, content_type="application/xml", headers={"x-oss-request-id": rid})
    if op == "PutObject":
        obj = await store.put(bucket, key, _body(request))
        return web.Response(headers={**head, "ETag": obj.etag})
    if op in ("GetObject", "HeadObject"):
        found = store.stat(bucket, key)
        if found is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.")
        return await _send_object(request, found, rid)
    if op == "DeleteObject":
        store.delete(bucket, key)
        return web.Response(status=204, headers=head)
    if op == "InitiateMultipartUpload":
        upload_id = store.initiate(bucket, key)
        return _xml_response(_xml("InitiateMultipartUploadResult",
                                  [("Bucket", bucket), ("Key", key), ("UploadId", upload_id)]), rid)
    upload_id = query.get("uploadId", "")
    if op == "UploadPart":
        try:
            number = int(query.get("partNumber", ""))
        except ValueError:
            number = 0
        if not 1 <= number <= 10000:
            raise OssError(400, "InvalidArgument", "partNumber must be an integer from 1 to 10000")
        part = await store.put_part(bucket, key, upload_id, number, _body(request))
        return web.Response(headers={**head, "ETag": part.etag})
    if op == "ListParts":
        parts = [
            _xml("Part", [("PartNumber", p.number), ("LastModified", _iso(p.path)), ("ETag", p.etag), ("Size", p.size)])
            for p in store.list_parts(bucket, key, upload_id)
        ]
        fields: list[tuple[str, object]] = [("Bucket", bucket), ("Key", key), ("UploadId", upload_id),
                                            ("PartNumberMarker", 0), ("MaxParts", 1000), ("IsTruncated", "false")]
        return _xml_response(_xml("ListPartsResult", fields + [("Part", p) for p in parts]), rid)
    if op == "CompleteMultipartUpload":
        try:
            obj = await store.complete(bucket, key, upload_id, _part_list(await request.read()))
        except ValueError as exc:
            raise OssError(400, "InvalidPart", str(exc)) from exc
        return _xml_response(_xml("CompleteMultipartUploadResult", [
            ("Location", f"http://{request.host}/{bucket}/{key}"), ("Bucket", bucket), ("Key", key), ("ETag", obj.etag)
        ]), rid)
    if op == "AbortMultipartUpload":
        store.abort(bucket, key, upload_id)
        return web.Response(status=204, headers=head)
    raise OssError(400, "NotImplemented", "the emulator serves object operations only (path-style /bucket/key)")


async def _drain(request: web.Request) -> None:
    """Read what is left of a body the answer does not need, so the client (which sends it whole
    before reading the answer) gets the answer rather than a reset connection."""
    while await request.content.readany():
        pass


def _drop(request: web.Request) -> web.HTTPException:
    """Close the connection with no answer; the caller raises what this returns."""
    if request.transport is not None:
        request.transport.close()
    return web.HTTPInternalServerError()


async def _before(request: web.Request, state: OssState, fault: OssFault, rid: str) -> web.StreamResponse | None:
    """What a fault does before the request is served: an answer that replaces it, or None
    (serve it; a ``slow`` one after its wait). Raises for a connection closed unanswered."""
    kind = fault.kind
    if kind == "slow":
        await asyncio.sleep(fault.seconds)
        return None
    if kind == "drop_after":
        return None
    if kind == "drop":
        raise _drop(request)
    if kind == "hang":
        await state.faults.released()
        raise _drop(request)
    await _drain(request)
    if kind == "garbage":
        return web.Response(body=GARBAGE_BODY, content_type="text/html", headers={"x-oss-request-id": rid})
    status = int(kind)
    code = "ServiceUnavailable" if status == 503 else "InternalError"
    return _error_response(request, OssError(status, code, "injected fault"), rid)


async def _serve(request: web.Request, state: OssState, *, op: str, bucket: str, key: str,
                 rid: str) -> web.StreamResponse:
    try:
        _check_signature(request, bucket, key, state.settings)
        response = await _dispatch(request, state, op=op, bucket=bucket, key=key, rid=rid)
    except NoSuchUpload:
        error = OssError(404, "NoSuchUpload", "The specified upload does not exist.")
    except OssError as exc:
        error = exc
    else:
        if op in WRITES:
            state.stored[(bucket, key)] += 1
        return response
    await _drain(request)
    return _error_response(request, error, rid)


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[OSS_STATE]
    rid = _request_id()
    bucket, _, key = request.path.lstrip("/").partition("/")
    op = _operation(request.method, dict(request.rel_url.query), bool(bucket and key))
    state.counters[op] += 1
    state.active += 1
    try:
        fault = state.faults.take(op)
        if fault is not None:
            answer = await _before(request, state, fault, rid)
            if answer is not None:
                return answer
        try:
            response = await _serve(request, state, op=op, bucket=bucket, key=key, rid=rid)
        except ConnectionResetError:  # the client gave up (a slow answer past its timeout): nothing stored
            raise _drop(request) from None
        if fault is not None and fault.kind == "drop_after":
            raise _drop(request)  # processed: the object is there, but the client never hears so
        return response
    finally:
        state.active -= 1


async def fill_route(request: web.Request) -> web.Response:
    """``POST /_emulator/oss/fill`` with ``{"bucket", "key", "count", "size"?}``: ``count`` objects
    of ``size`` bytes (default 64), named by ``key`` with ``{n}`` replaced by each number from 0,
    zero-padded to the width of the last; answers ``{"stored": count}``."""
    try:
        spec = await request.json()
        bucket, template, count = str(spec["bucket"]), str(spec["key"]), int(spec["count"])
        size = int(spec.get("size", 64))
        if bucket_name_problem(bucket) or "{n}" not in template or not 0 <= count <= 10**8 or not 0 <= size <= 1 << 20:
            raise ValueError("bucket must be a valid name, key must hold {n}, count 0..1e8 and size 0..1 MiB")
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    width = len(str(max(count - 1, 0)))
    keys = (template.replace("{n}", f"{n:0{width}d}") for n in range(count))
    stored = request.app[OSS_STATE].store.fill(bucket, keys, b"x" * size)
    return web.json_response({"stored": stored})


def create_oss_app(settings: OssSettings | None = None, store: ObjectStore | None = None) -> web.Application:
    """The OSS app; ``app[OSS_STATE]`` is its live state. The store's temp dir goes with the app."""
    settings = settings or OssSettings()
    if store is None:
        store = ObjectStore(settings.root, settings.buckets)
    else:
        for bucket in settings.buckets:
            store.create_bucket(bucket)
    state = OssState(settings, store)
    app = web.Application()
    app[OSS_STATE] = state
    app.router.add_post("/_emulator/oss/fill", fill_route)
    app.router.add_route("*", "/{tail:.*}", _handle)

    async def close_store(_: web.Application) -> None:
        state.store.close()

    app.on_cleanup.append(close_store)
    return app
