"""An OSS prefix as a catalog: ``oss://BUCKET/PREFIX`` listed through the official SDK's
ListObjectsV2 paginator, page by page, one page in memory at a time.

::

    selection = Selection(analyses_by_type={"video": ["video_snapshot"]}, include=["*.mp4"])
    counts = selection.new_counts()
    for entry in list_oss("oss://media/2024/", config.upload, selection, counts=counts):   # Listed
        ...  # entry.record -> validate_record; entry.stamp -> etag, size, last_modified
    counts.complete   # True only after the last page (IsTruncated false)

* The client is the upload stage's: the same endpoint, region, path-style rule, timeouts and
  credentials (the SDK's environment variables only; nothing is copied anywhere), built by the
  same helpers (`pipeline.upload`), so a config that uploads also lists. The bucket is the
  source's, not ``upload.bucket``.
* ``PREFIX`` is an OSS key prefix taken as written: ``oss://b/photos`` also lists
  ``photos-old/...`` and ``photos.txt``; end it with ``/`` to list one folder. Every key under
  it is listed (no delimiter). Keys ending in ``/`` (zero-byte folder markers) are counted, not
  listed. The id is the whole key; the item's source is ``oss://bucket/key``; include/exclude
  patterns match the key, and media kinds come from its extension, as for a folder.
* Faults: a 5xx, a 429, a timeout, a dropped connection or an answer that is not a usable page
  (not a listing of this bucket, truncated without a token, keys going backwards) is retried
  with the upload stage's policy (`core.backoff.retry_delay`), resuming from the last page that
  arrived; past the retries the iterator raises `OssUnavailable` (the run stops resumably,
  exit 3). OSS refusing the key pair raises `OssAuthError` (exit 4); a bucket that does not exist, or any other refusal,
  `ManifestError` (exit 2). A listing never ends quietly part way: `ListingCounts.complete`
  turns True only after the last page, so a caller deciding what vanished can trust it.

Blocking (the SDK's synchronous client, and ``sleep`` between retries): iterate it in a worker
thread, never on the event loop. Pages are fetched one ahead by a thread of the listing's own,
so at most three pages (3,000 keys) are in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import alibabacloud_oss_v2 as oss

from ..config.sections import UploadConfig
from ..core.backoff import RetryPolicy, retry_delay
from ..core.echo import clipped, shown
from ..core.errors import ConfigError, ManifestError, RetryableError, UnreadableResponse
from ..manifest.listed import Listed, ListingCounts, Selection, SourceStamp
from ..upload.errors import OssAuthError, OssBucketMissing, OssUnavailable
from ..upload.stage import upload_settings  # the upload stage's UploadConfig -> UploadSettings, reused as is
from ..upload.transfer import UploadSettings, sdk_config  # its SDK client config: one way to reach OSS
from ..upload.translate import translate

__all__ = ["PAGE_SIZE", "OssPrefix", "list_oss", "parse_oss_source", "probe_oss"]

PAGE_SIZE = 1000  # keys per ListObjectsV2 request: OSS's maximum, so the fewest round trips
_PUT_WAIT = 0.1  # seconds the page thread waits to hand a page over before it looks for a stop
_SOURCE = re.compile(r"oss://(?P<bucket>[^/]*)(?:/(?P<prefix>.*))?", re.DOTALL)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")  # OSS's rule for bucket names


@dataclass(frozen=True)
class OssPrefix:
    """Where a listed source is: a bucket and a key prefix ("" for the whole bucket)."""

    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        """``oss://bucket/prefix``, as the user wrote it (give or take a trailing ``/``)."""
        return f"oss://{self.bucket}/{self.prefix}"


def parse_oss_source(text: str) -> OssPrefix:
    """``oss://BUCKET[/PREFIX]`` as an `OssPrefix`; raises `ManifestError` (exit 2) otherwise."""
    match = _SOURCE.fullmatch(text)
    if match is None:
        raise ManifestError(f"{shown(text)} is not an OSS source: write oss://BUCKET/PREFIX", source=clipped(text))
    bucket = match["bucket"]
    if not _BUCKET.fullmatch(bucket):
        raise ManifestError(f"{shown(bucket)} is not a bucket name: 3 to 63 lower-case letters, digits or '-', "
                            "starting and ending with a letter or digit", source=clipped(text))
    return OssPrefix(bucket, match["prefix"] or "")


def list_oss(source: str | OssPrefix, upload: UploadConfig, selection: Selection, *,
             retry: RetryPolicy | None = None, timeout: float = 30.0, counts: ListingCounts | None = None,
             page_size: int = PAGE_SIZE, sleep: Callable[[float], None] = time.sleep,
             rand: Callable[[], float] = random.random, page_ends: bool = False) -> Iterator[Listed | None]:
    """The objects under `source` that `selection` admits, as `Listed` items, in key order;
    with `page_ends`, a None after each page's items (where the next item may be a request away).

    `upload` gives the endpoint and region (its bucket is not used); `retry` and `timeout`
    are the run's (the upload stage's) retry policy and per-request timeout. `counts` is filled
    in as pages arrive. Raises `ManifestError` or `ConfigError` (exit 2: a bad source, no
    credentials in the environment) now, before the first request; everything else when
    iterating (see the module docstring)."""
    counts = counts if counts is not None else selection.new_counts()
    return _listing(source, upload, retry, timeout, counts=counts, page_size=page_size, sleep=sleep,
                    rand=rand).items(selection, page_ends)


def probe_oss(source: str | OssPrefix, upload: UploadConfig, *, retry: RetryPolicy | None = None,
              timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
              rand: Callable[[], float] = random.random) -> None:
    """One ListObjectsV2 of one key, retried as a listing's pages are: returns when OSS lists the
    source, raises what the listing would (`ManifestError` for a bucket that does not exist,
    `OssAuthError` for a refused key pair, `OssUnavailable` past the retries). A run calls it
    before it writes anything, so that the listing itself can begin once the run has started
    (a first page with no media on it is no reason to read on before the run starts). Blocking."""
    listing = _listing(source, upload, retry, timeout, counts=ListingCounts(), page_size=1, sleep=sleep, rand=rand)
    with contextlib.closing(listing.pages()) as pages:
        next(pages, None)


def _listing(source: str | OssPrefix, upload: UploadConfig, retry: RetryPolicy | None, timeout: float, *,
             counts: ListingCounts, page_size: int, sleep: Callable[[float], None],
             rand: Callable[[], float]) -> _Listing:
    where = source if isinstance(source, OssPrefix) else parse_oss_source(source)
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"page_size must be 1 to {PAGE_SIZE}, got {page_size!r}")
    settings = dataclasses.replace(upload_settings(upload, retry or RetryPolicy(), timeout), bucket=where.bucket)
    problem = settings.check()
    if problem is not None:
        raise ConfigError(problem, source=clipped(where.uri))
    return _Listing(oss.Client(sdk_config(settings)), where, settings, counts, page_size, sleep, rand)


@dataclass
class _Listing:
    """One listing under way: its client, where it lists, and how it retries."""

    client: Any
    where: OssPrefix
    settings: UploadSettings
    counts: ListingCounts
    page_size: int
    sleep: Callable[[float], None]
    rand: Callable[[], float]

    def items(self, selection: Selection, page_ends: bool = False) -> Iterator[Listed | None]:
        counts, bucket = self.counts, self.where.bucket
        line = 0
        with contextlib.closing(_prefetched(self.pages())) as pages:  # closed early: its thread stops
            for page in pages:
                for obj in page.contents or ():
                    key = obj.key
                    if key.endswith("/"):
                        counts.folder_markers += 1
                        continue
                    admitted = selection.admit(key, counts)
                    if admitted is None:
                        continue
                    line += 1
                    counts.yielded += 1
                    kind, analyses = admitted
                    uri = f"oss://{bucket}/{key}"
                    yield Listed(line, {"id": key, "oss": uri, "analyses": analyses},
                                 SourceStamp(uri, obj.size, etag=obj.etag, last_modified=_iso(obj.last_modified)),
                                 kind)
                if page_ends:
                    yield None
        counts.complete = True

    def pages(self) -> Generator[Any, None, None]:
        """Every page, in order, each checked; a failed request is retried from the last page that
        arrived (the SDK's paginator cannot go on after an error, so a new one starts at its token)."""
        token: str | None = None
        last_key = ""
        attempt = 1
        while True:
            request = oss.ListObjectsV2Request(bucket=self.where.bucket, prefix=self.where.prefix or None,
                                               max_keys=self.page_size, continuation_token=token)
            pages = self.client.list_objects_v2_paginator().iter_page(request)
            while True:
                try:
                    page = next(pages, None)
                    if page is None:
                        return
                    _check(page, self.where.bucket, last_key)
                except Exception as exc:  # the SDK's errors, classified by the upload stage's `translate`
                    self._give_up_unless_retryable(exc, attempt)
                    self.counts.retries += 1
                    self.sleep(retry_delay(attempt, self.settings.retry, self.rand))
                    attempt += 1
                    break  # a new paginator, from `token`
                attempt = 1
                self.counts.pages += 1
                if page.contents:
                    last_key = page.contents[-1].key
                yield page
                if not page.is_truncated:
                    return
                token = page.next_continuation_token

    def _give_up_unless_retryable(self, exc: Exception, attempt: int) -> None:
        """Return when `exc` may be retried; otherwise raise what the run should stop with."""
        where, settings = self.where, self.settings
        error = translate(exc, f"listing {where.uri}")
        if isinstance(error, OssAuthError):
            raise error from None
        if isinstance(error, OssBucketMissing):
            raise ManifestError(f"the bucket {shown(where.bucket)} does not exist at {settings.where}: check the "
                                "bucket name, and the endpoint and region in the upload section",
                                source=clipped(where.uri)) from None
        if not isinstance(error, RetryableError):
            raise ManifestError(f"OSS refused to list it: {error}", source=clipped(where.uri)) from None
        if attempt >= settings.retry.max_attempts:
            status = f" (HTTP {error.http_status})" if error.http_status else ""
            raise OssUnavailable(
                None, f"OSS at {settings.where} failed {attempt} attempts in a row listing {where.uri}, the last "
                      f"with {error.code}{status}: {clipped(error.message, 300)}; the listing stopped after "
                      f"{self.counts.pages} pages ({self.counts.listed} objects): run again to resume",
                attempts=attempt) from exc


def _prefetched(pages: Iterator[Any], depth: int = 1) -> Generator[Any, None, None]:
    """`pages`, fetched `depth` ahead by a thread of their own, so that waiting for the next page
    overlaps turning this one into items (measured: the SDK spends ~50 µs of CPU per object
    parsing a page, about what OSS takes to answer one). Its errors are raised here, in order;
    closing this generator stops the thread within `_PUT_WAIT`."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, value), timeout=_PUT_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for page in pages:
                if not put("page", page):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put("error", exc)
        else:
            put("end", None)

    thread = threading.Thread(target=pump, name="oss-listing", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def _check(page: Any, bucket: str, last_key: str) -> None:
    """Raise `UnreadableResponse` (retried) for a page the listing cannot go on from, or cannot
    trust to be OSS's: a 200 whose body is some proxy's page parses into an empty, untruncated
    result, which would end the listing quietly as if complete."""
    contents = page.contents or ()
    entries = len(contents) + len(page.common_prefixes or ())
    if page.name != bucket or page.is_truncated is None or page.key_count != entries:
        raise UnreadableResponse(None, "the answer to ListObjectsV2 is not a listing of this bucket (no Name, "
                                       "IsTruncated or a KeyCount that matches): is the endpoint OSS?")
    if page.is_truncated and not page.next_continuation_token:
        raise UnreadableResponse(None, "a truncated ListObjectsV2 page without a NextContinuationToken")
    previous = last_key
    for obj in contents:
        if not isinstance(obj.key, str) or obj.key <= previous or obj.size is None:
            raise UnreadableResponse(None, f"ListObjectsV2 answered key {shown(obj.key)} after {shown(previous)}"
                                           " (keys must increase and carry a size)")
        previous = obj.key


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
