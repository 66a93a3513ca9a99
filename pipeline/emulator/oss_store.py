"""The emulator's object store: objects and multipart uploads as files in one directory.

Bodies are streamed to disk chunk by chunk (a 2 GB upload never sits in memory), and each
object is one file, so GetObject streams it back and the service routes can read an
``oss://bucket/key`` input by path (:meth:`ObjectStore.get`). A bucket exists only once it was
created (:meth:`ObjectStore.create_bucket`: PutBucket, or the buckets the emulator was started
with), as on OSS: writing to a misspelled bucket fails here as it would there.

ETags follow OSS: the upper-case hex MD5 of the body in quotes for PutObject; for a
completed multipart upload, the MD5 of the parts' binary MD5s followed by ``-<parts>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BUCKET_NAME_RULE", "NoSuchUpload", "ObjectStore", "PartInfo", "StoredObject", "bucket_name_problem"]

COPY_CHUNK = 1024 * 1024  # bytes per read when parts are joined into the object file
#: OSS's rule for bucket names (3 to 63 characters).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
BUCKET_NAME_RULE = "3 to 63 lower-case letters, digits or '-', starting and ending with a letter or digit"


def bucket_name_problem(name: str) -> str | None:
    """None for a valid OSS bucket name; otherwise what is wrong with it."""
    if BUCKET_NAME.fullmatch(name):
        return None
    return f"{name[:80]!r} is not a valid bucket name: {BUCKET_NAME_RULE}"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object: where its bytes are, how many, its ETag (quoted, as OSS sends it) and when it
    was written (epoch seconds, ListObjectsV2's LastModified). ``shared``: the file holds the
    bytes of many objects (:meth:`ObjectStore.fill`), so replacing or deleting one keeps it."""

    path: Path
    size: int
    etag: str
    modified: float = field(default_factory=time.time)
    shared: bool = False


@dataclass(frozen=True)
class PartInfo:
    """One uploaded part of a multipart upload."""

    number: int
    path: Path
    size: int
    etag: str


@dataclass
class _Upload:
    """A multipart upload in progress."""

    bucket: str
    key: str
    directory: Path
    parts: dict[int, PartInfo]


class NoSuchUpload(KeyError):
    """The upload id is unknown, completed or aborted (OSS: 404 NoSuchUpload)."""


def _join(sources: list[Path], target: Path) -> None:
    """Concatenate ``sources`` into ``target``, a chunk at a time."""
    with target.open("wb") as out:
        for source in sources:
            with source.open("rb") as src:
                shutil.copyfileobj(src, out, COPY_CHUNK)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _quoted(md5_hex: str) -> str:
    return f'"{md5_hex.upper()}"'


class ObjectStore:
    """Objects and multipart uploads under ``root`` (a fresh temp dir unless given).

    Single-threaded by design: it is used from the emulator's event loop only.
    """

    def __init__(self, root: Path | None = None, buckets: Iterable[str] = ()) -> None:
        self._owned = root is None  # a temp dir we made is ours to delete in close()
        self.root = Path(tempfile.mkdtemp(prefix="oss-emulator-")) if root is None else root
        self._buckets: set[str] = set(buckets)
        self._objects: dict[tuple[str, str], StoredObject] = {}
        #: Each bucket's keys in listing order (code point order is UTF-8 byte order, as OSS
        #: sorts), built on the first listing and dropped when a key comes or goes.
        self._sorted: dict[str, list[str]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._ids = itertools.count(1)  # file names and upload ids: unique within this store

    def __repr__(self) -> str:
        return (f"ObjectStore(root={str(self.root)!r}, buckets={len(self._buckets)}, objects={len(self._objects)}, "
                f"uploads={len(self._uploads)})")

    # -- lookups the service routes use ------------------------------------------------------

    def get(self, bucket: str, key: str) -> Path | None:
        """The file holding ``oss://bucket/key``, or None when there is no such object."""
        obj = self._objects.get((bucket, key))
        return obj.path if obj is not None else None

    def holds_bucket(self, bucket: str) -> bool:
        """Whether ``bucket`` exists here (it was created)."""
        return bucket in self._buckets

    # -- buckets ----------------------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> bool:
        """PutBucket: True when it is new, False when it existed already."""
        if bucket in self._buckets:
            return False
        self._buckets.add(bucket)
        return True

    def delete_bucket(self, bucket: str) -> None:
        """Forget ``bucket`` and everything in it (OSS refuses a non-empty one; a test may not)."""
        for name, key in [k for k in self._objects if k[0] == bucket]:
            self.delete(name, key)
        for upload_id in [u for u, up in self._uploads.items() if up.bucket == bucket]:
            self._drop_upload(upload_id)
        self._buckets.discard(bucket)

    def stat(self, bucket: str, key: str) -> StoredObject | None:
        """The object's record (size, ETag, path), or None."""
        return self._objects.get((bucket, key))

    def sorted_keys(self, bucket: str) -> list[str]:
        """The bucket's keys in ListObjectsV2 order. Shared, not copied: do not change it."""
        keys = self._sorted.get(bucket)
        if keys is None:
            # One sort per change of the key set, not per page: a listing of a million keys
            # asks for this a thousand times.
            keys = self._sorted[bucket] = sorted(key for name, key in self._objects if name == bucket)
        return keys

    # -- writes -----------------------------------------------------------------------------------

    def _new_path(self, kind: str) -> Path:
        directory = self.root / kind
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{next(self._ids):08d}"

    async def _write(self, path: Path, chunks: AsyncIterator[bytes]) -> tuple[int, str]:
        """Stream ``chunks`` into ``path``; returns (size, md5 hex). Removes the file on failure."""
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            # Plain blocking writes: chunks are small and the disk is local, so a thread hop per
            # chunk would cost more than the write.
            with path.open("wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
        except BaseException:
            _remove(path)  # a half-written body is not an object or a part
            raise
        return size, md5.hexdigest()

    async def put(self, bucket: str, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        """PutObject: store the body, replacing any object of that name."""
        path = self._new_path("objects")
        size, md5_hex = await self._write(path, chunks)
        return self._replace(bucket, key, StoredObject(path, size, _quoted(md5_hex)))

    def _replace(self, bucket: str, key: str, obj: StoredObject) -> StoredObject:
        old = self._objects.get((bucket, key))
        self._objects[(bucket, key)] = obj
        if old is None:
            self._sorted.pop(bucket, None)
        elif not old.shared:
            old.path.unlink(missing_ok=True)
        return obj

    def delete(self, bucket: str, key: str) -> bool:
        """DeleteObject; True when something was deleted."""
        obj = self._objects.pop((bucket, key), None)
        if obj is not None:
            self._sorted.pop(bucket, None)
            if not obj.shared:
                obj.path.unlink(missing_ok=True)
        return obj is not None

    def fill(self, bucket: str, keys: Iterable[str], body: bytes) -> int:
        """Store ``body`` under every one of ``keys`` at once, without a request per object (a
        benchmark's million objects); the bucket is created if needed. One file holds the bytes
        for all of them. Returns how many keys were stored."""
        self.create_bucket(bucket)
        path = self._new_path("objects")
        path.write_bytes(body)
        # One record for them all (it is immutable): a million objects cost their keys, not a
        # million records.
        shared = StoredObject(path, len(body), _quoted(hashlib.md5(body, usedforsecurity=False).hexdigest()),
                              shared=True)
        objects = self._objects
        count = 0
        for key in keys:
            old = objects.get((bucket, key))
            objects[(bucket, key)] = shared
            if old is not None and not old.shared:
                old.path.unlink(missing_ok=True)
            count += 1
        self._sorted.pop(bucket, None)
        return count

    # -- multipart ------------------------------------------------------------------------------

    def initiate(self, bucket: str, key: str) -> str:
        """InitiateMultipartUpload: a new upload id."""
        upload_id = f"{next(self._ids):08d}{os.urandom(8).hex().upper()}"
        directory = self.root / "uploads" / upload_id
        directory.mkdir(parents=True)
        self._uploads[upload_id] = _Upload(bucket, key, directory, {})
        return upload_id

    def _upload(self, bucket: str, key: str, upload_id: str) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            raise NoSuchUpload(upload_id)
        return upload

    async def put_part(
        self, bucket: str, key: str, upload_id: str, number: int, chunks: AsyncIterator[bytes]
    ) -> PartInfo:
        """UploadPart: store part ``number`` (a re-sent part replaces the earlier one)."""
        upload = self._upload(bucket, key, upload_id)
        path = upload.directory / f"{number:05d}.{next(self._ids)}"
        size, md5_hex = await self._write(path, chunks)
        part = PartInfo(number, path, size, _quoted(md5_hex))
        old = upload.parts.get(number)
        upload.parts[number] = part
        if old is not None:
            old.path.unlink(missing_ok=True)
        return part

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """ListParts: the parts received so far, by number."""
        return sorted(self._upload(bucket, key, upload_id).parts.values(), key=lambda p: p.number)

    async def complete(self, bucket: str, key: str, upload_id: str, numbers: list[tuple[int, str]]) -> StoredObject:
        """CompleteMultipartUpload with ``[(part number, etag)]``; raises ValueError for a bad list."""
        upload = self._upload(bucket, key, upload_id)
        if not numbers:
            raise ValueError("the part list is empty")
        if [n for n, _ in numbers] != sorted({n for n, _ in numbers}):
            raise ValueError("parts must be listed once each, in ascending order")
        chosen = []
        for number, etag in numbers:
            part = upload.parts.get(number)
            if part is None or part.etag.strip('"').upper() != etag.strip('"').upper():
                raise ValueError(f"part {number} was not uploaded or its ETag does not match")
            chosen.append(part)
        path = self._new_path("objects")
        # Joining parts is a big local copy: off the event loop, so other requests keep flowing.
        await asyncio.to_thread(_join, [p.path for p in chosen], path)
        digest = hashlib.md5(usedforsecurity=False)
        for part in chosen:
            digest.update(bytes.fromhex(part.etag.strip('"')))
        size = sum(p.size for p in chosen)
        obj = StoredObject(path, size, f'"{digest.hexdigest().upper()}-{len(chosen)}"')
        self._drop_upload(upload_id)
        return self._replace(bucket, key, obj)

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        """AbortMultipartUpload: forget the upload and its parts."""
        self._upload(bucket, key, upload_id)
        self._drop_upload(upload_id)

    def _drop_upload(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)  # None: an abort raced a complete
        if upload is not None:
            shutil.rmtree(upload.directory, ignore_errors=True)

    def close(self) -> None:
        """Delete the temp dir this store made (safe to call twice)."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
        self._objects.clear()
        self._sorted.clear()
        self._uploads.clear()
