"""The upload stage of a run: `path` items that do not fit the request body go to OSS first.

For each such item (or every `path` item with `upload.always`): the file is uploaded once,
content-addressed (`transfer.py` does the OSS work through the official SDK), the object is
recorded in the checkpoint against the item with the file's size and mtime (so a resume
neither hashes nor uploads it again while the file keeps them, and uploads the new bytes of a
file changed since), and the item is rewritten to what its capability reads: `oss://bucket/key`
where the body takes `oss`, else a presigned GET URL valid longer than the poll timeout. The
result line records the object (`source_oss`).

Before the run starts (`check_uploads`): the `oss` extra, the bucket and the credentials must be
there (exit 2), and one HEAD checks the bucket exists (exit 2) and OSS takes the key pair (exit 4).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.sections import MAX_PRESIGN_S, UploadConfig
from ..core.backoff import RetryPolicy
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped
from ..core.errors import ConfigError
from ..core.fingerprint import file_stamp
from ..core.job import Job
from ..manifest.item import needs_upload
from ..state.checkpoint import Checkpoint
from .files import FileError

if TYPE_CHECKING:
    from .transfer import OssSession, UploadSettings

__all__ = ["Uploads", "check_uploads", "goes_to_oss", "upload_settings"]

log = logging.getLogger("pipeline.run")

#: A presigned URL outlives the poll timeout by this much (and never OSS's 7 days).
PRESIGN_MARGIN_S = 3600.0


def goes_to_oss(capability: str, size: int, *, always: bool) -> bool:
    """Whether a local file of `size` bytes for `capability` is uploaded (uploads configured):
    every one with `upload.always` or where the capability takes no inline content, else those
    too big for the request body. `run` and `validate` decide with this one rule."""
    return always or "path" not in CAPABILITIES[capability].sources or needs_upload(size)


def upload_settings(cfg: UploadConfig, retry: RetryPolicy, timeout: float) -> UploadSettings:
    """The connection settings of the `upload:` section (also what an OSS listing connects with)."""
    from .transfer import UploadSettings

    return UploadSettings.of(cfg, retry, timeout)


async def check_uploads(cfg: UploadConfig, *, timeout: float = 30.0) -> None:
    """Before anything starts, when uploads are configured: raise `ConfigError` (exit 2) if they
    cannot work (the `oss` extra missing, no bucket or credentials, a bucket OSS does not have)
    and `OssAuthError` (exit 4) if OSS refuses the key pair. One HEAD, no retry, `timeout`
    seconds at most; OSS not answering is left to the uploads (they stop the run resumably)."""
    if not cfg.enabled:
        return
    try:
        settings = upload_settings(cfg, RetryPolicy(), timeout)
    except ImportError:
        raise ConfigError("alibabacloud-oss-v2 is not installed: pip install 'opensearch-media-pipeline[oss]'",
                          key="upload") from None
    problem = settings.check()
    if problem is not None:
        raise ConfigError(problem, key="upload")
    from .transfer import probe

    await probe(settings)


class Uploads:
    """One run's uploads. `async with` it; `prepare(job)` gives the job to submit."""

    def __init__(self, cfg: UploadConfig, *, retry: RetryPolicy, poll_timeout: float, state_dir: Path,
                 checkpoint: Checkpoint, on_bytes: Callable[[int], None] | None = None,
                 timeout: float = 30.0) -> None:
        self.enabled = cfg.enabled
        self._cfg = cfg
        self._retry = retry
        self._timeout = timeout  # each OSS request's connect and read timeout: the run's request_timeout
        self._expires = min(poll_timeout + PRESIGN_MARGIN_S, MAX_PRESIGN_S)
        self._state_dir = state_dir
        self._ckpt = checkpoint
        self._on_bytes = on_bytes
        self._session: OssSession | None = None
        self._settings: UploadSettings | None = None

    async def __aenter__(self) -> Uploads:
        if self.enabled:
            from .transfer import OssSession

            self._settings = upload_settings(self._cfg, self._retry, self._timeout)
            self._session = OssSession(self._settings, self._state_dir, progress=self._on_bytes)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def wanted(self, job: Job) -> bool:
        """Whether this item's file goes through OSS, or its listed object is sent as a presigned URL."""
        if job.source_kind == "oss":  # only an OSS listing's objects get past validation to url-only services
            return "oss" not in CAPABILITIES[job.capability].sources
        if not self.enabled or job.source_kind != "path":
            return False
        if goes_to_oss(job.capability, 0, always=self._cfg.always):
            return True  # whatever its size: no stat needed
        try:
            return goes_to_oss(job.capability, os.stat(job.source).st_size, always=False)
        except OSError:
            return False  # the body builder reports the file error

    async def prepare(self, job: Job) -> Job:
        """The job as it is submitted: unchanged, pointing at its uploaded object, or (a listed
        object for a service that reads only URLs) at a presigned GET URL of its object. The URL
        is a credential for the object while it lives: it goes into the request body, never into
        the job a line, a log or the checkpoint is made from (`Submission` keeps that one)."""
        if not self.wanted(job):
            return job
        if job.source_kind == "oss":
            return self._presigned(job)
        assert self._session is not None and self._settings is not None
        from .transfer import UploadedObject

        record = self._ckpt.upload_record(job.id)
        known = None
        if record is not None and record.bucket == self._settings.bucket:
            known = UploadedObject(record.bucket, record.key, record.size, record.sha256, record.mtime_ns)
        # The recorded object is reused only while the file keeps its size and mtime; else it is
        # hashed again, and its new bytes (if they changed) uploaded before the item is sent.
        obj = await self._session.ensure_uploaded(Path(job.source), known=known)
        if obj is not known:
            if record is not None and record.key != obj.key:
                log.warning("%s changed since it was uploaded for item %s (%d -> %d bytes): its new content is "
                            "uploaded and sent", clipped(job.source), clipped(job.id), record.size, obj.size)
            self._ckpt.record_upload(job.id, obj.bucket, obj.key, obj.size, obj.sha256, mtime_ns=obj.mtime_ns)
        if job.stamp is not None and obj.mtime_ns is not None and file_stamp(obj.size, obj.mtime_ns) != job.stamp:
            # What was hashed is not what the fingerprint says (see `request_body`): not sent.
            raise FileError(None, f"{clipped(job.source)} changed after it was listed: not sent; the next run "
                                  "sends its new content")
        oss_uri = obj.oss_uri
        name = job.file_name or os.path.basename(job.source)
        if "oss" in CAPABILITIES[job.capability].sources:
            return dataclasses.replace(job, source_kind="oss", source=oss_uri, file_name=name, source_oss=oss_uri)
        from .transfer import presign_get

        url = presign_get(obj, self._settings, self._expires)
        return dataclasses.replace(job, source_kind="url", source=url, file_name=name, source_oss=oss_uri)

    def _presigned(self, job: Job) -> Job:
        """A listed object's job with a presigned GET URL for its source, signed with the upload
        section's endpoint, region and key pair (the listing's), valid past the poll timeout."""
        from .transfer import UploadedObject, presign_get

        bucket, _, key = job.source.removeprefix("oss://").partition("/")
        settings = dataclasses.replace(upload_settings(self._cfg, self._retry, self._timeout), bucket=bucket)
        url = presign_get(UploadedObject(bucket, key, 0, ""), settings, self._expires)
        return dataclasses.replace(job, source_kind="url", source=url, file_name=job.file_name or os.path.basename(key))
