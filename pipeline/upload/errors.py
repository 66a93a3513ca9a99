"""The upload stage's own errors, under the pipeline's tree: OSS refusing the key pair
(`OssAuthError`, exit 4), a bucket that does not exist (`OssBucketMissing`), OSS unusable after
every retry (`OssUnavailable`, a resumable stop), and the cancel of an upload thread. Which SDK
exception becomes which is `translate`'s business; this module imports no SDK.
"""

from __future__ import annotations

from ..core.errors import AuthError, FatalError, PipelineError

__all__ = ["OssAuthError", "OssBucketMissing", "OssUnavailable", "UploadCancelled"]


class OssAuthError(AuthError):
    """OSS refused the AccessKey pair (403 InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied)."""

    default_code = "OssAccessDenied"
    credential = "OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET"


class OssBucketMissing(FatalError):
    """The configured bucket does not exist: every upload would fail the same way."""

    default_code = "NoSuchBucket"


class OssUnavailable(FatalError):
    """OSS could not be used after every retry (unreachable, timing out, failing, answering
    what is not OSS): every upload would fail alike, and none is the item's fault, so the run
    stops resumably (exit 3) and marks nothing failed."""

    default_code = "OssUnavailable"


class UploadCancelled(PipelineError):
    """Raised inside the SDK's progress callback to stop an upload thread whose task was cancelled."""
