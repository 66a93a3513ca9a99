"""The capability table: everything the pipeline knows about each service, in one place.

Each `Capability` entry says where the service lives on the wire (its path segment), whether
it is a synchronous call or an async task, its default and known service ids, which input
sources it accepts, how to build a request body from a `Job`, how to read its result, which
QPS group it draws from and which capability's result it takes as its chunks. No other code of
the pipeline names a capability (tests/test_capabilities.py checks). Adding one is an entry
here, plus what is not the pipeline's code: its published prices (`config/pricing.py`, by
service id), its model in the emulator (`emulator/settings.py`), and the README's table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from .job import Job

#: The service's request body limit (docs/protocol.md: 8 MB).
MAX_BODY_BYTES = 8 * 1024 * 1024

IMAGE_TYPES = ("jpg", "jpeg", "png", "bmp", "tiff")
VIDEO_TYPES = ("mp4", "avi", "mkv", "mov", "flv", "webm")

#: Builds a create body from the table's row, the job and the base64 of a local file (or None).
BodyBuilder = Callable[["Capability", Job, "str | None"], dict[str, Any]]

#: A service id is a path segment of every request: `ops-` and then only letters, digits, '.',
#: '_' or '-', so that no id can add a path segment, a query or a fragment to the URL.
_SERVICE_ID = re.compile(r"ops-[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ParamSpec:
    """One documented parameter: its accepted Python types and, optionally, allowed values
    and a lower bound (numbers only; `True` is never a number here)."""

    types: tuple[type, ...]
    choices: tuple[Any, ...] = ()
    minimum: float | None = None


@dataclass(frozen=True)
class Capability:
    """One row of the table. `build_body(job, content_b64)` gets the base64 of a local file
    (read at submit time) or None; `parse_result(result)` turns the service's `result`
    (the status result for async tasks, the whole result for sync ones) into the `data`
    of a result line."""

    name: str
    segment: str
    is_async: bool
    default_service_id: str
    sources: frozenset[str]
    qps_group: str
    default_qps: float
    builder: BodyBuilder
    #: Service ids the capability also answers to, besides `default_service_id`.
    other_service_ids: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    parameters: Mapping[str, ParamSpec] = field(default_factory=dict)
    #: The body must carry `output: {"type": "oss", "oss": "oss://…"}` (after defaults).
    requires_output_oss: bool = False
    default_output: Mapping[str, Any] | None = None
    #: The `output.type` values the service takes; empty: the capability takes no `output`.
    output_types: tuple[str, ...] = ()
    #: File types (extensions, `file_type` values) the service takes; empty: not checked.
    #: A name whose extension is not one of them is refused; a name without one is fine.
    media_types: tuple[str, ...] = ()
    #: Inline `content` must come with a file name (given, or `<id>.<file_type>`).
    content_needs_file_name: bool = False
    #: Extra per-item checks beyond the fields above; return a reason or None.
    check: Callable[[Job], str | None] | None = None
    #: Run `after` this capability, it takes that result's `data` as its `chunks` (the
    #: protocol chains video segmentation -> summarization this way).
    chunks_from: str | None = None

    @property
    def known_service_ids(self) -> tuple[str, ...]:
        """Every service id the capability answers to, its default first."""
        return (self.default_service_id, *self.other_service_ids)

    def build_body(self, job: Job, content_b64: str | None) -> dict[str, Any]:
        """The create (or synchronous call) body of `job`, as docs/protocol.md shows it."""
        return self.builder(self, job, content_b64)

    def parse_result(self, result: Mapping[str, Any]) -> Any:
        """The `data` of a result line: `result.data` for tasks, `result` itself when sync."""
        if self.is_async:
            return result.get("data")
        return dict(result)


# ---------------------------------------------------------------------------------------
# Body builders: pure functions of the job (and the base64 of a local file, when it has one)


def _inline(job: Job, content_b64: str | None) -> dict[str, Any]:
    """The source as the service names it: url / oss / content (local paths become content)."""
    if job.source_kind == "path":
        if content_b64 is None:
            raise ValueError(f"job {job.id}: local file content was not loaded")
        return {"content": content_b64}
    return {job.source_kind: job.source}


@functools.lru_cache(maxsize=4096)
def _url_file_name(url: str) -> str | None:
    """The last segment of the URL's path: never the host, never the query or fragment.
    (Cached: the manifest checks and the body builder both ask, once per item.)"""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or None


def _file_name(job: Job) -> str | None:
    if job.file_name:
        return job.file_name
    if job.source_kind == "url":
        return _url_file_name(job.source)
    if job.source_kind == "oss":  # object keys are literal: '?' and '#' are part of the name
        return job.source.rstrip("/").rsplit("/", 1)[-1] or None
    if job.source_kind == "path":
        return re.split(r"[/\\]", job.source.rstrip("/\\"))[-1] or None
    return None


def _file_type(job: Job, allowed: tuple[str, ...]) -> str | None:
    if job.file_type:
        return job.file_type.lower()
    name = _file_name(job)
    if name and "." in name:
        ext = name.rsplit(".", 1)[1].lower()
        if ext in allowed:
            return ext
    return None


def _without_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _output(job: Job, cap_default: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if job.output is None:
        return dict(cap_default) if cap_default is not None else None
    if isinstance(job.output, str):  # shorthand: "oss://bucket/prefix/"
        return {"type": "oss", "oss": job.output}
    out = dict(job.output)
    if "oss" in out and "type" not in out:
        out["type"] = "oss"
    return out


def build_image_analyze(_cap: Capability, job: Job, content_b64: str | None) -> dict[str, Any]:
    document = _inline(job, content_b64)
    document["file_name"] = _file_name(job)
    document["file_type"] = _file_type(job, IMAGE_TYPES)
    return {"document": _without_none(document)}


def build_object_detection(_cap: Capability, job: Job, content_b64: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"image": _inline(job, content_b64)}
    if job.options is not None:
        body["options"] = dict(job.options)
    return body


def build_media(cap: Capability, job: Job, content_b64: str | None) -> dict[str, Any]:
    """Video and audio bodies: `input`, then `output` (the row's default when the job gives none)
    and `parameters`."""
    source = _inline(job, content_b64)
    source["file_name"] = _file_name(job)
    if job.chunks is not None:
        source["chunks"] = list(job.chunks)
    body: dict[str, Any] = {"input": _without_none(source)}
    output = effective_output(cap, job)
    if output is not None:
        body["output"] = output
    if job.parameters is not None:
        body["parameters"] = dict(job.parameters)
    return body


def _content_needs_video_type(job: Job) -> str | None:
    if job.source_kind in ("content", "path"):
        name = _file_name(job)
        ext = (job.file_type or (name.rsplit(".", 1)[1] if name and "." in name else "")).lower()
        if ext not in VIDEO_TYPES:
            return f"inline video must be one of {', '.join(VIDEO_TYPES)} (set file_name or file_type)"
    return None


CAPABILITIES: dict[str, Capability] = {
    cap.name: cap
    for cap in (
        Capability(
            name="image_analyze",
            segment="image-analyze",
            is_async=True,
            default_service_id="ops-image-analyze-ocr-001",
            other_service_ids=("ops-image-analyze-vlm-001",),
            sources=frozenset({"url", "path", "content"}),
            qps_group="image-analyze",
            default_qps=10,
            builder=build_image_analyze,
            aliases=("Extract Image Content", "image content extraction", "image analyze",
                     "image-analyze", "ocr", "vlm", "document analyze image"),
            media_types=IMAGE_TYPES,
            content_needs_file_name=True,
        ),
        Capability(
            name="object_detection",
            segment="image-object-detection",
            is_async=False,
            default_service_id="ops-object-detect-001",
            other_service_ids=("ops-object-detect-face-001",),
            sources=frozenset({"url", "path", "content"}),
            qps_group="image-object-detection",
            default_qps=20,
            builder=build_object_detection,
            aliases=("Detect Objects in Image", "object detection", "image object detection",
                     "image-object-detection", "face detection", "detect faces"),
            media_types=IMAGE_TYPES,
        ),
        Capability(
            name="video_segmentation",
            segment="video-segmentation",
            is_async=True,
            default_service_id="ops-video-segment-001",
            sources=frozenset({"url", "oss"}),
            qps_group="video-segmentation",
            default_qps=5,
            builder=build_media,
            aliases=("Segment Video", "video segmentation", "video-segmentation",
                     "video segment"),
            requires_output_oss=True,
            output_types=("oss",),
            media_types=VIDEO_TYPES,
        ),
        Capability(
            name="video_snapshot",
            segment="video-snapshot",
            is_async=True,
            default_service_id="ops-video-snapshot-001",
            sources=frozenset({"url", "oss", "path", "content"}),
            qps_group="video-snapshot",
            default_qps=5,
            builder=build_media,
            aliases=("Extract Video Keyframes", "video snapshot", "video-snapshot",
                     "video keyframes", "keyframes", "snapshot"),
            parameters={
                "interval": ParamSpec((int,), minimum=1),  # seconds between frames
                "format": ParamSpec((str,), ("jpg", "png")),
            },
            # Without an output location the frames come back inline, so the result line
            # is usable on its own; an OSS output must be asked for explicitly.
            default_output={"type": "base64"},
            output_types=("oss", "base64"),
            media_types=VIDEO_TYPES,
            content_needs_file_name=True,
            check=_content_needs_video_type,
        ),
        Capability(
            name="video_summarization",
            segment="video-summarization",
            is_async=True,
            default_service_id="ops-video-summarize-001",
            sources=frozenset({"url", "oss"}),
            qps_group="video-summarization",
            default_qps=5,
            builder=build_media,
            aliases=("Create Video Summary", "video summarization", "video-summarization",
                     "video summary", "summarize video"),
            parameters={
                "rewrite_transcript": ParamSpec((bool,)),
                "generate_tags": ParamSpec((bool,)),
                "extract_snapshot": ParamSpec((bool,)),
            },
            requires_output_oss=True,
            output_types=("oss",),
            media_types=VIDEO_TYPES,
            chunks_from="video_segmentation",
        ),
        Capability(
            name="audio_asr",
            segment="audio-asr",
            is_async=True,
            default_service_id="ops-audio-asr-001",
            sources=frozenset({"url", "oss", "path", "content"}),
            qps_group="audio-asr",
            default_qps=5,
            builder=build_media,
            aliases=("Transcribe Audio/Video", "Transcribe Audio", "audio asr", "audio-asr",
                     "asr", "speech recognition", "transcription", "audio video asr"),
            # The transcript in the result line by default; the service's own default (oss)
            # would need an output location the user may not have.
            default_output={"type": "text"},
            output_types=("text", "oss"),
            content_needs_file_name=True,
        ),
    )
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


_ALIASES: dict[str, str] = {}
for _cap in CAPABILITIES.values():
    for _alias in (_cap.name, _cap.segment, *_cap.aliases):
        _ALIASES[_norm(_alias)] = _cap.name


@functools.lru_cache(maxsize=256)  # manifests repeat a handful of names millions of times
def resolve(name: str) -> Capability | None:
    """The capability for a canonical name or any alias (case, spaces and punctuation ignored)."""
    key = _ALIASES.get(_norm(name))
    return CAPABILITIES[key] if key else None


def owner_of_service_id(service_id: str) -> Capability | None:
    """The capability a known service id belongs to, or None for an unknown `ops-` id."""
    for cap in CAPABILITIES.values():
        if service_id in cap.known_service_ids:
            return cap
    return None


def valid_service_id(service_id: str) -> bool:
    """Whether `service_id` is safe to put in a request path: `ops-` and then letters, digits,
    '.', '_' or '-', with no '..' (so it can never climb out of its path segment)."""
    return _SERVICE_ID.fullmatch(service_id) is not None and ".." not in service_id


def extension(name: str | None) -> str | None:
    """The lower-cased extension of a file name, or None when it has none."""
    if not name or "." not in name.strip("."):
        return None
    return name.rsplit(".", 1)[1].lower() or None


def media_type_problem(cap: Capability, job: Job) -> str | None:
    """Why the job's file type is one `cap` does not take (None when fine or unknown).

    Both `file_type` (when given) and the extension of the file name the request carries
    (given, or the last segment of the URL, OSS key or path) must be one of `cap.media_types`;
    a name without an extension is fine.
    """
    if not cap.media_types:
        return None
    allowed = ", ".join(cap.media_types)
    if job.file_type and job.file_type.lower() not in cap.media_types:
        return f"file_type '{job.file_type}' is not accepted by {cap.name}: use one of {allowed}"
    name = _file_name(job)
    ext = extension(name)
    if ext is not None and ext not in cap.media_types:
        if job.file_name:
            return f"file_name '{name}' is a .{ext} file, which {cap.name} does not accept: use one of {allowed}"
        return (f"{job.source_kind} '{name}' is a .{ext} file, which {cap.name} does not accept: use one of "
                f"{allowed} (if the file's real type is one of them, give a file_name with that extension)")
    return None


def effective_output(cap: Capability, job: Job) -> dict[str, Any] | None:
    """The `output` object the body will carry, after shorthand and defaults."""
    return _output(job, cap.default_output)
