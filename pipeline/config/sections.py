"""The nested sections of the run configuration (frozen dataclasses, checked when built)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError

__all__ = ["MAX_PRESIGN_S", "MIN_PART_BYTES", "FailureThreshold", "UploadConfig"]

#: OSS takes no multipart part smaller than this (the last one excepted), in bytes.
MIN_PART_BYTES = 100 * 1024
#: OSS refuses a presigned URL valid for longer than this (7 days), in seconds.
MAX_PRESIGN_S = 7 * 24 * 3600


@dataclass(frozen=True)
class FailureThreshold:
    """Stop a run that is clearly misconfigured: when more than `max_ratio` of the first
    `window` finished items failed. `window: 0` turns the check off."""

    window: int = 100
    max_ratio: float = 0.5


@dataclass(frozen=True)
class UploadConfig:
    """Local files uploaded to OSS (the `oss` extra): those too big to send inline, or every
    `path` source with `always`. Off while `bucket` is empty. Credentials come only from the
    environment (OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, optional OSS_SESSION_TOKEN)."""

    bucket: str = ""
    prefix: str = "media-pipeline"
    region: str = "cn-hangzhou"
    endpoint: str | None = None  # a host or a full URL (http://127.0.0.1:9000); None: the region's
    concurrency: int = 4  # files hashed or uploaded at once
    part_size: int = 8 * 1024 * 1024  # files this big or bigger go multipart
    always: bool = False  # upload every `path` source, not only those too big to send inline

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"must be >= 1, got {self.concurrency!r}", key="upload.concurrency")
        if self.part_size < MIN_PART_BYTES:
            raise ConfigError(f"must be >= {MIN_PART_BYTES} bytes (OSS's smallest part), got {self.part_size!r}",
                              key="upload.part_size")

    @property
    def enabled(self) -> bool:
        """Whether local files go through OSS at all (a bucket is named)."""
        return bool(self.bucket)
