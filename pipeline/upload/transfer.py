"""The upload stage's building blocks: local files to content-addressed OSS objects, via the official SDK.

::

    settings = UploadSettings(bucket="media", prefix="pipeline", endpoint="http://127.0.0.1:9000")
    if (problem := settings.check()) is not None: ...             # exit 2 before anything starts
    await probe(settings)                                         # one HEAD: the bucket and the key pair
    async with OssSession(settings, state_dir) as session:
        obj = await session.ensure_uploaded(Path("ep12.mp4"))     # UploadedObject, obj.oss_uri
        url = presign_get(obj, settings, expires_s=7200)          # for url-only capabilities

Objects are named ``{prefix}/{sha256}.{ext}`` so the same bytes upload once: a HEAD first
skips an object already there with the same size, and a HEAD after an upload checks it landed
(a 2xx from something that is not OSS, a proxy's page, stored nothing). One attempt is that
HEAD, upload, HEAD together, so an attempt after a lost answer finds the object its predecessor
stored and sends nothing again. An upload whose object a checkpoint recorded is reused without
reading the file, as long as the file keeps the size and mtime it had when hashed
(``ensure_uploaded(path, known=...)``). Small files go up with one PutObject,
larger ones through the SDK's multipart ``Uploader`` whose resumable checkpoint lives in
``state_dir/oss-upload/`` (upload id only; parts are found again with ListParts), so an upload
killed midway continues from the parts already sent. Files are streamed, never read whole.

The SDK is synchronous where it matters (its ``Uploader``), so file work and uploads run in
the session's own thread pool, ``concurrency`` at a time; HEAD uses the SDK's asyncio client.
Credentials come only from the SDK's environment variables (``OSS_ACCESS_KEY_ID``,
``OSS_ACCESS_KEY_SECRET``, optional ``OSS_SESSION_TOKEN``) and are never written anywhere.

Errors: :class:`~pipeline.upload.files.FileError` (this item fails), :class:`OssAuthError`
(403: stop the run, like a 401), :class:`OssBucketMissing` (stop the run), and
:class:`OssUnavailable` once 5xx, 429s, timeouts, dropped connections and unusable 2xx answers
outlast the retries (as :class:`~pipeline.core.retries.RetryBudget` says): OSS, not the item, is
failing, so the run stops resumably rather than failing items.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import alibabacloud_oss_v2 as oss
import alibabacloud_oss_v2.aio as oss_aio

from ..config.sections import MAX_PRESIGN_S, UploadConfig
from ..core.backoff import RetryPolicy
from ..core.echo import clipped, shown
from ..core.errors import ConfigError, RetryableError, ServiceError, UnreadableResponse
from ..core.retries import Failure, RetryBudget
from .errors import OssAuthError, OssBucketMissing, OssUnavailable, UploadCancelled
from .files import FileStamp, check_unchanged, hash_file, object_key, stamp_of
from .translate import translate

__all__ = ["CREDENTIAL_ENV", "OssAuthError", "OssBucketMissing", "OssSession", "OssUnavailable", "UploadSettings",
           "UploadedObject", "ensure_uploaded", "presign_get", "probe", "sdk_config"]

T = TypeVar("T")
CREDENTIAL_ENV = ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET")  # OSS_SESSION_TOKEN is optional
CHECKPOINT_DIR = "oss-upload"  # under the state dir: the SDK uploader's .ucp files
PART_PARALLEL = 3  # parts in flight per multipart upload (the SDK's default)
#: The start check's object: a content-addressed name no file has (no sha256 is all zeros).
PROBE_NAME = "0" * 64


@dataclass(frozen=True)
class UploadSettings(UploadConfig):
    """The ``upload:`` configuration and what the run adds to it: the retry policy and each
    request's timeout. Credentials are not here (environment only)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0  # seconds to connect, and between bytes of an answer (the run's request_timeout)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.timeout > 0:
            raise ConfigError(f"must be > 0 seconds, got {self.timeout!r}", key="request_timeout")

    @classmethod
    def of(cls, config: UploadConfig, retry: RetryPolicy, timeout: float) -> UploadSettings:
        """``config`` with the run's retry policy and request timeout."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(UploadConfig)}, retry=retry, timeout=timeout)

    def check(self, env: Mapping[str, str] | None = None) -> str | None:
        """Why uploads cannot start (missing bucket or credentials), or None; checked before the run."""
        env = os.environ if env is None else env
        if not self.bucket:
            return "upload.bucket is not set: name the OSS bucket local files should be uploaded to"
        missing = [name for name in CREDENTIAL_ENV if not env.get(name)]
        if missing:
            return (f"{' and '.join(missing)} not set: OSS uploads need an AccessKey pair in the environment "
                    "(OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, and OSS_SESSION_TOKEN for temporary ones)")
        return None

    @property
    def where(self) -> str:
        """The endpoint and bucket, as a message names them."""
        endpoint = self.endpoint or f"oss-{self.region}.aliyuncs.com"
        return f"{clipped(endpoint)} (bucket {shown(self.bucket)})"

    @property
    def path_style(self) -> bool:
        """Path-style addressing (``host/bucket/key``) when the endpoint is an IP address or localhost."""
        if not self.endpoint:
            return False
        host = urlsplit(self.endpoint if "//" in self.endpoint else f"//{self.endpoint}").hostname or ""
        if host == "localhost":
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class UploadedObject:
    """An object holding a local file's bytes; ``mtime_ns`` is the file's when it was hashed
    (None: not known, e.g. a record from before it was kept)."""

    bucket: str
    key: str
    size: int
    sha256: str
    mtime_ns: int | None = field(default=None, compare=False)  # the local file's, not the object's

    @property
    def oss_uri(self) -> str:
        """``oss://bucket/key``, as the services' ``oss`` inputs take it."""
        return f"oss://{self.bucket}/{self.key}"

    def holds(self, stamp: FileStamp) -> bool:
        """Whether a file with ``stamp`` still has the bytes hashed for this object, short of
        reading it: the same size and modification time (an unknown mtime never matches)."""
        return self.mtime_ns is not None and (self.size, self.mtime_ns) == (stamp.size, stamp.mtime_ns)


def sdk_config(settings: UploadSettings) -> Any:
    """The official SDK's client config for `settings` (the uploads' and an OSS listing's)."""
    cfg = oss.config.load_default()
    # Read from the environment here, each time: the pair is never copied into anything we write.
    cfg.credentials_provider = oss.credentials.EnvironmentVariableCredentialsProvider()
    cfg.region = settings.region
    if settings.endpoint:
        cfg.endpoint = settings.endpoint
        cfg.use_path_style = settings.path_style
    # A hang or a silent server ends an attempt after this, not after the SDK's 10 s + 20 s.
    cfg.connect_timeout = cfg.readwrite_timeout = settings.timeout
    # Retries are ours (core.retries), so a failure is seen once, classified, then retried.
    cfg.retryer = oss.retry.NopRetryer()
    return cfg


def presign_get(obj: UploadedObject, settings: UploadSettings, expires_s: float) -> str:
    """A presigned GET URL for ``obj``, valid ``expires_s`` seconds (at most 7 days). No network."""
    if not 0 < expires_s <= MAX_PRESIGN_S:
        raise ConfigError(f"a presigned URL lives 1 s to 7 days, asked for {expires_s!r} s", key="upload.presign")
    client = oss.Client(sdk_config(settings))
    request = oss.GetObjectRequest(bucket=obj.bucket, key=obj.key)
    return str(client.presign(request, expires=timedelta(seconds=expires_s)).url)


async def probe(settings: UploadSettings) -> None:
    """The start check: one HEAD, no retry, of an object no file can be named after.

    A missing bucket raises `ConfigError` (exit 2: fix the config, nothing started) and a key
    pair OSS refuses raises :class:`OssAuthError` (exit 4). Anything else (OSS unreachable,
    slow, failing) is left to the uploads, which retry and stop the run resumably: a run whose
    items need no upload should not wait on OSS.
    """
    request = oss.HeadObjectRequest(bucket=settings.bucket,
                                    key=object_key(settings.prefix, PROBE_NAME, Path("probe")))
    async with oss_aio.AsyncClient(sdk_config(settings)) as client:
        try:
            await client.head_object(request)
        except Exception as exc:
            error = translate(exc, f"HEAD oss://{settings.bucket}/{request.key}")
            if isinstance(error, OssBucketMissing):
                raise ConfigError(f"the bucket {shown(settings.bucket)} does not exist at "
                                  f"{clipped(settings.endpoint or settings.region)}: create it, or fix the name",
                                  key="upload.bucket") from None
            if isinstance(error, OssAuthError):
                raise error from None


def _failed(task: asyncio.Task[Any]) -> bool:
    """A finished task that did not succeed: the next caller starts over rather than inherit its error."""
    return task.done() and (task.cancelled() or task.exception() is not None)


Progress = Callable[[int], None]  # bytes just sent; called on the event loop


class OssSession:
    """Clients, thread pool and bookkeeping for one run's uploads; ``async with`` it.

    The same file in many items is hashed and uploaded once per session (keyed by its stamp).
    ``close`` cancels what is still running and is safe to call twice.
    """

    def __init__(
        self,
        settings: UploadSettings,
        state_dir: Path,
        *,
        progress: Progress | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.checkpoint_dir = state_dir / CHECKPOINT_DIR
        self._progress = progress  # told of every chunk of bytes sent, for the progress display
        self._sleep, self._rand = sleep, rand  # backoff between retries; tests pass fakes
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="oss-upload")
        self._slots = asyncio.Semaphore(settings.concurrency)  # files in work at once
        self._aio: Any = None  # the SDK's asyncio client, made on first use inside the loop
        self._sync: Any = None  # the SDK's sync client, for its Uploader
        self._work: dict[tuple[Path, FileStamp], asyncio.Task[UploadedObject]] = {}  # one task per file
        self._sends: dict[str, asyncio.Task[None]] = {}  # one HEAD-then-upload per object key
        self._closed = False

    def __repr__(self) -> str:
        return f"OssSession(bucket={self.settings.bucket!r}, files={len(self._work)}, closed={self._closed})"

    async def __aenter__(self) -> OssSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel unfinished uploads, close the clients and the thread pool."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [*self._work.values(), *self._sends.values()]
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:  # a failure whose waiter was cancelled first is not "never retrieved"
            if task.done() and not task.cancelled():
                task.exception()
        if self._aio is not None:
            await self._aio.close()
        self._pool.shutdown(wait=True)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def ensure_uploaded(self, path: Path, known: UploadedObject | None = None) -> UploadedObject:
        """The object holding ``path``'s bytes, uploading them unless already there.

        ``known`` (the object a checkpoint recorded for this file) is returned as it is, with
        no hash and no request, while the file keeps the size and mtime it had then; a file
        changed since is hashed again (and uploaded when its bytes changed)."""
        if self._closed:
            raise RuntimeError("OssSession is closed")
        path = await self._in_thread(Path.absolute, path)
        stamp = await self._in_thread(stamp_of, path)
        if known is not None and known.holds(stamp):
            return known
        task = self._work.get((path, stamp))
        if task is None or _failed(task):
            task = asyncio.create_task(self._upload(path), name=f"upload {path.name}")
            self._work[(path, stamp)] = task
        # Shielded: one caller giving up must not cancel the upload other items wait for.
        return await asyncio.shield(task)

    async def _upload(self, path: Path) -> UploadedObject:
        async with self._slots:
            sha256, stamp = await self._in_thread(hash_file, path)
        key = object_key(self.settings.prefix, sha256, path)
        obj = UploadedObject(self.settings.bucket, key, stamp.size, sha256, stamp.mtime_ns)
        # Two names for the same bytes share one object: the second waits for the first's upload.
        send = self._sends.get(key)
        if send is None or _failed(send):
            send = asyncio.create_task(self._send(path, obj, stamp), name=f"send {key}")
            self._sends[key] = send
        await asyncio.shield(send)
        return obj

    async def _send(self, path: Path, obj: UploadedObject, stamp: FileStamp) -> None:
        async with self._slots:
            await self._retrying(lambda: self._send_once(path, obj, stamp))

    async def _send_once(self, path: Path, obj: UploadedObject, stamp: FileStamp) -> None:
        """One attempt: HEAD, and unless the object is there, upload it and HEAD it again."""
        if await self._exists(obj):
            return
        await self._put_file(path, obj, stamp)
        if not await self._exists(obj):
            raise UnreadableResponse(None, f"{obj.oss_uri}: the upload was answered 2xx but the object is not there "
                                           f"with its {obj.size} bytes (is the endpoint OSS?)")

    async def _exists(self, obj: UploadedObject) -> bool:
        if self._aio is None:
            self._aio = oss_aio.AsyncClient(sdk_config(self.settings))
        try:
            head = await self._aio.head_object(oss.HeadObjectRequest(bucket=obj.bucket, key=obj.key))
        except Exception as exc:
            error = translate(exc, f"HEAD {obj.oss_uri}")
            if isinstance(error, ServiceError) and error.http_status == 404:
                return False
            raise error from exc
        return bool(head.content_length == obj.size)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after a backoff while it fails with a retryable error (5xx, 429, no
        answer, an unusable 2xx); past the retries, :class:`OssUnavailable`.

        Every retryable failure counts against ``max_attempts``, a 429 too, and OSS's
        ``Retry-After`` is not read: one attempt (HEAD, upload, HEAD) sends nothing twice, so no
        failure is ambiguous, and OSS throttling for long is an outage to stop on, resumably."""
        budget = RetryBudget(self.settings.retry)
        while True:
            try:
                return await call()
            except Exception as exc:
                error = translate(exc, "OSS")
                if not isinstance(error, RetryableError):
                    if not isinstance(error, ServiceError):
                        if error is exc:
                            raise
                        raise error from exc
                    # our own error (a FileError) keeps its cause; an SDK exception is the cause of its translation
                    raise error.with_attempts(budget.next_attempt) from (exc.__cause__ if error is exc else exc)
                verdict = budget.after(Failure.TRANSIENT, self._rand)
                budget = verdict.budget
                if verdict.delay is None:
                    status = f" (HTTP {error.http_status})" if error.http_status else ""
                    raise OssUnavailable(
                        None, f"OSS at {self.settings.where} failed {budget.attempts} attempts in a row, the last "
                              f"with {error.code}{status}: {clipped(error.message, 300)}",
                        attempts=budget.attempts) from exc
            await self._sleep(verdict.delay)

    async def _put_file(self, path: Path, obj: UploadedObject, stamp: FileStamp) -> None:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()  # set when the task is cancelled: the thread stops at the next chunk

        def progress(sent: int, _total: int, _size: int) -> None:
            if cancel.is_set():
                raise UploadCancelled(None, "upload cancelled")
            if self._progress is not None:
                loop.call_soon_threadsafe(self._progress, sent)

        future = loop.run_in_executor(self._pool, self._put_blocking, path, obj, progress)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            # Wait for the thread: parts in flight finish and the checkpoint stays consistent.
            await asyncio.gather(future, return_exceptions=True)
            raise
        try:
            await self._in_thread(check_unchanged, path, stamp, "while uploaded")
        except Exception:
            # The object may hold bytes that do not match its name: it must not be found by a HEAD later.
            await self._in_thread(self._delete_blocking, obj)
            raise

    def _client(self) -> Any:
        if self._sync is None:
            self._sync = oss.Client(sdk_config(self.settings))
        return self._sync

    def _put_blocking(self, path: Path, obj: UploadedObject, progress: Callable[[int, int, int], None]) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        uploader = self._client().uploader(
            part_size=self.settings.part_size,
            parallel_num=PART_PARALLEL,
            enable_checkpoint=True,
            # The SDK keeps the directory part of this path, so it must end with a separator.
            checkpoint_dir=str(self.checkpoint_dir) + os.sep,
        )
        request = oss.PutObjectRequest(bucket=obj.bucket, key=obj.key, progress_fn=progress)
        uploader.upload_file(request, str(path))

    def _delete_blocking(self, obj: UploadedObject) -> None:
        try:
            self._client().delete_object(oss.DeleteObjectRequest(bucket=obj.bucket, key=obj.key))
        except Exception:  # best effort: the FileChanged error is the one to report
            pass


async def ensure_uploaded(path: Path, settings: UploadSettings, state_dir: Path) -> UploadedObject:
    """One file, with a session of its own: the object holding ``path``'s bytes (see :class:`OssSession`)."""
    async with OssSession(settings, state_dir) as session:
        return await session.ensure_uploaded(path)
