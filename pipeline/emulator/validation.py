"""Request validation per capability (docs/protocol.md, request bodies).

Every check raises ``InvalidParameter`` with a message that names the field, e.g.
``document.file_name is required when document.url is blank``. Blank strings count as absent.
Unknown extra keys are ignored, as the SDK may add fields the emulator does not model.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .settings import (
    AUDIO_ASR,
    IMAGE_ANALYZE,
    OBJECT_DETECTION,
    VIDEO_SEGMENTATION,
    VIDEO_SNAPSHOT,
    VIDEO_SUMMARIZATION,
)
from .wire import ApiError, invalid

KNOWN_SERVICE_IDS: Mapping[str, str] = {
    "ops-image-analyze-ocr-001": IMAGE_ANALYZE,
    "ops-image-analyze-vlm-001": IMAGE_ANALYZE,
    "ops-object-detect-001": OBJECT_DETECTION,
    "ops-object-detect-face-001": OBJECT_DETECTION,
    "ops-video-segment-001": VIDEO_SEGMENTATION,
    "ops-video-snapshot-001": VIDEO_SNAPSHOT,
    "ops-video-summarize-001": VIDEO_SUMMARIZATION,
    "ops-audio-asr-001": AUDIO_ASR,
}
IMAGE_TYPES = ("jpg", "jpeg", "png", "bmp", "tiff")
VIDEO_TYPES = ("mp4", "avi", "mkv", "mov", "flv", "webm")
SNAPSHOT_FORMATS = ("jpg", "png")
OSS_SCHEME = "oss://"
#: How much of a bad value an error message quotes (a base64 blob must not fill the log).
ECHOED_VALUE_CHARS = 80

JsonObject = dict[str, Any]


def check_service_id(capability: str, service_id: str) -> None:
    """Service ids start with ``ops-``; a known id must belong to ``capability``."""
    if not service_id.startswith("ops-"):
        raise invalid(f"service_id {service_id!r} is invalid: service ids start with 'ops-'")
    owner = KNOWN_SERVICE_IDS.get(service_id)
    if owner is not None and owner != capability:
        raise invalid(f"service_id {service_id!r} belongs to {owner}, not {capability}")


def _object(parent: JsonObject, key: str, path: str, required: bool = True) -> JsonObject | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise invalid(f"{path} is required")
        return None
    if not isinstance(value, dict):
        raise invalid(f"{path} must be an object")
    return value


def _text(obj: JsonObject, key: str, path: str) -> str | None:
    """The string at ``obj[key]``; None when absent or blank."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{path}.{key} must be a string")
    return value if value.strip() else None


def _one_source(obj: JsonObject, path: str, keys: tuple[str, ...]) -> str:
    """Exactly one of ``keys`` is set; returns which, after checking its format."""
    present = [k for k in keys if _text(obj, k, path) is not None]
    wanted = "/".join(keys)
    if len(present) != 1:
        found = f"got {', '.join(present)}" if present else "got none"
        raise invalid(f"{path}: exactly one of {wanted} is required ({found})")
    key = present[0]
    value = obj[key]
    field = f"{path}.{key}"
    if key == "oss":
        _check_oss(value, field)
    elif key == "url":
        _check_url(value, field)
    elif key == "content":
        _check_base64(value, field)
    return key


def _check_oss(value: str, field: str) -> None:
    bucket = value[len(OSS_SCHEME):]
    if not value.startswith(OSS_SCHEME) or not bucket or bucket.startswith("/"):
        raise invalid(f"{field} must be an OSS path like oss://bucket/key, got {value[:ECHOED_VALUE_CHARS]!r}")


def _check_url(value: str, field: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f"{field} must be an http(s) URL reachable by the service")


def _check_base64(value: str, field: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{field} must be base64-encoded file content") from None


def _extension(name: str | None) -> str | None:
    if not name:
        return None
    ext = posixpath.splitext(urlsplit(name).path if "://" in name else name)[1]
    return ext[1:].lower() or None


def _check_video_name(inp: JsonObject, path: str, required: bool) -> None:
    name = _text(inp, "file_name", path)
    if name is None:
        if required:
            raise invalid(f"{path}.file_name is required when {path}.content is used")
        return
    ext = _extension(name)
    if ext not in VIDEO_TYPES:
        raise invalid(f"{path}.file_name must end in one of {', '.join(VIDEO_TYPES)}")


def _output_oss(body: JsonObject, types: tuple[str, ...], default: str | None) -> None:
    """``output`` with ``type`` in ``types``; ``output.oss`` required when the type is oss."""
    output = _object(body, "output", "output", required=default is None)
    output = output or {}
    kind = _text(output, "type", "output") or default
    if kind not in types:
        raise invalid(f"output.type must be one of {', '.join(types)}")
    if kind == "oss":
        oss = _text(output, "oss", "output")
        if oss is None:
            raise invalid("output.oss is required" + (" when output.type is oss" if len(types) > 1 else ""))
        _check_oss(oss, "output.oss")


def _parameters(body: JsonObject) -> JsonObject:
    return _object(body, "parameters", "parameters", required=False) or {}


def validate_image_analyze(body: JsonObject) -> None:
    document = _object(body, "document", "document")
    assert document is not None
    _one_source(document, "document", ("url", "content"))
    url = _text(document, "url", "document")
    name = _text(document, "file_name", "document")
    if url is None and name is None:
        raise invalid("document.file_name is required when document.url is blank")
    file_type = _text(document, "file_type", "document")
    inferred = file_type.lower() if file_type else _extension(name) or _extension(url)
    if (file_type is not None or inferred is not None) and inferred not in IMAGE_TYPES:
        origin = "" if file_type else " (taken from the file name's extension)"
        raise invalid(f"document.file_type must be one of {', '.join(IMAGE_TYPES)}{origin}")


def validate_object_detection(body: JsonObject) -> None:
    image = _object(body, "image", "image")
    assert image is not None
    _one_source(image, "image", ("url", "content"))
    _object(body, "options", "options", required=False)


def validate_video_segmentation(body: JsonObject) -> None:
    inp = _object(body, "input", "input")
    assert inp is not None
    if _text(inp, "content", "input") is not None:
        raise invalid("input.content is not supported by video-segmentation: use input.oss or input.url")
    _one_source(inp, "input", ("oss", "url"))
    _check_video_name(inp, "input", required=False)
    _output_oss(body, ("oss",), None)
    _parameters(body)


def validate_video_snapshot(body: JsonObject) -> None:
    inp = _object(body, "input", "input")
    assert inp is not None
    source = _one_source(inp, "input", ("content", "oss", "url"))
    _check_video_name(inp, "input", required=source == "content")
    params = _parameters(body)
    interval = params.get("interval", 1)
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise invalid("parameters.interval must be a positive integer number of seconds")
    fmt = params.get("format", "jpg")
    if fmt not in SNAPSHOT_FORMATS:
        raise invalid(f"parameters.format must be one of {', '.join(SNAPSHOT_FORMATS)}")
    _output_oss(body, ("oss", "base64"), "oss")


def _number(obj: JsonObject, key: str, path: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{path}.{key} must be a number")
    return float(value)


def _check_chunk(chunk: Any, path: str) -> None:
    if not isinstance(chunk, dict):
        raise invalid(f"{path} must be an object")
    start, end = _number(chunk, "start_time", path), _number(chunk, "end_time", path)
    if end < start:
        raise invalid(f"{path}.end_time must not be before {path}.start_time")
    _text(chunk, "transcript", path)
    snapshots = chunk.get("snapshots", [])
    if not isinstance(snapshots, list):
        raise invalid(f"{path}.snapshots must be a list")
    for j, snap in enumerate(snapshots):
        spath = f"{path}.snapshots[{j}]"
        if not isinstance(snap, dict):
            raise invalid(f"{spath} must be an object")
        index = snap.get("frame_index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise invalid(f"{spath}.frame_index must be an integer")
        _number(snap, "frame_time", spath)
        if _text(snap, "path", spath) is None:
            raise invalid(f"{spath}.path is required")


def validate_video_summarization(body: JsonObject) -> None:
    inp = _object(body, "input", "input")
    assert inp is not None
    chunks = inp.get("chunks") or []
    if not isinstance(chunks, list):
        raise invalid("input.chunks must be a list of segmentation chunks")
    for i, chunk in enumerate(chunks):
        _check_chunk(chunk, f"input.chunks[{i}]")
    sources = [k for k in ("oss", "url") if _text(inp, k, "input") is not None]
    if len(sources) > 1:
        raise invalid("input: at most one of oss/url may be set (got oss, url)")
    if not sources and not chunks:
        raise invalid("input: one of oss/url or a non-empty input.chunks is required")
    if sources:
        _one_source(inp, "input", ("oss", "url"))
    _check_video_name(inp, "input", required=False)
    params = _parameters(body)
    for flag in ("rewrite_transcript", "generate_tags", "extract_snapshot"):
        if flag in params and not isinstance(params[flag], bool):
            raise invalid(f"parameters.{flag} must be true or false")
    _output_oss(body, ("oss",), None)


def validate_audio_asr(body: JsonObject) -> None:
    inp = _object(body, "input", "input")
    assert inp is not None
    if _text(inp, "content", "input") and _text(inp, "oss", "input"):
        raise invalid("input.content and input.oss are mutually exclusive")
    _one_source(inp, "input", ("content", "oss", "url"))
    _output_oss(body, ("text", "oss"), "oss")
    _parameters(body)


VALIDATORS: Mapping[str, Callable[[JsonObject], None]] = {
    IMAGE_ANALYZE: validate_image_analyze,
    OBJECT_DETECTION: validate_object_detection,
    VIDEO_SEGMENTATION: validate_video_segmentation,
    VIDEO_SNAPSHOT: validate_video_snapshot,
    VIDEO_SUMMARIZATION: validate_video_summarization,
    AUDIO_ASR: validate_audio_asr,
}


def validate_body(capability: str, body: Any) -> JsonObject:
    """Check a create body for ``capability``; returns it typed as an object."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    VALIDATORS[capability](body)
    return body


__all__ = ["KNOWN_SERVICE_IDS", "ApiError", "check_service_id", "validate_body"]
