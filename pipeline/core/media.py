"""Media kinds: which files of a listed catalog (a folder, an OSS prefix) are images, videos or
audio, told by extension alone, and which kinds each capability reads. Pure.

The extensions are the ones the services take (the capability table's `media_types`), plus
the common audio containers for transcription, whose service checks none. A file with any
other extension has no kind: a listing counts it as skipped rather than sending what every
service would refuse.
"""

from __future__ import annotations

from .capabilities import IMAGE_TYPES, VIDEO_TYPES, Capability, extension

__all__ = ["AUDIO_TYPES", "MEDIA_KINDS", "kind_of_extension", "kinds_read_by", "media_kind"]

AUDIO_TYPES = ("mp3", "wav", "m4a", "aac", "flac", "ogg", "opus", "amr", "wma")
MEDIA_KINDS = ("image", "video", "audio")

_BY_EXTENSION = {
    **dict.fromkeys(IMAGE_TYPES, "image"),
    **dict.fromkeys(VIDEO_TYPES, "video"),
    **dict.fromkeys(AUDIO_TYPES, "audio"),
}
#: What a capability that checks no media type reads: today only audio_asr, whose service
#: transcribes "audio/video" (docs/protocol.md), so both kinds with a sound track.
_UNCHECKED = frozenset({"audio", "video"})


def kind_of_extension(ext: str | None) -> str | None:
    """"image", "video" or "audio" for a lower-cased extension, None for any other (or none)."""
    return _BY_EXTENSION.get(ext) if ext else None


def media_kind(name: str) -> str | None:
    """The media kind of a file name, path or object key, by its extension (any case)."""
    return kind_of_extension(extension(name.rsplit("/", 1)[-1]))


def kinds_read_by(cap: Capability) -> frozenset[str]:
    """The media kinds `cap` reads: those of the file types it takes; a capability that checks
    none reads audio and video (see `_UNCHECKED`)."""
    if not cap.media_types:
        return _UNCHECKED
    kinds = {kind_of_extension(ext) for ext in cap.media_types}
    return frozenset(kind for kind in kinds if kind is not None)
