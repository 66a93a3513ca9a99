"""Deterministic results derived from the request, so a test can tell whose result it is.

Each builder takes ``(service_id, body, seed)`` and returns ``(data, usage)``: the value of
``result.data`` (or ``result`` for object detection) and the ``usage`` object. Texts name the
source (file name, URL or OSS key) and carry ``[h:<12 hex>]``, a short hash of the canonical
request body; output paths are built from ``output.oss`` and the source's stem. The same body
and seed always give the same result; any change to the body changes it.
"""

from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .counters import submission_key
from .faults import seeded_random
from .settings import (
    AUDIO_ASR,
    IMAGE_ANALYZE,
    OBJECT_DETECTION,
    VIDEO_SEGMENTATION,
    VIDEO_SNAPSHOT,
    VIDEO_SUMMARIZATION,
)

Body = dict[str, Any]
Built = tuple[Any, dict[str, Any]]
FPS = 25  # frame rate assumed when turning times into frame indexes
HASH_CHARS = 12  # hex digits of the submission key quoted in texts as [h:...]
INLINE_NAME_CHARS = 8  # hex digits naming an inline (base64) source
# Usage figures, shaped like the service's: a token is about four characters of text, an
# image (a frame) costs 258 tokens, a second of audio 25 tokens.
CHARS_PER_TOKEN = 4
IMAGE_TOKENS_PER_FRAME = 258
AUDIO_TOKENS_PER_SECOND = 25
SUMMARY_PROMPT_TOKENS = 32  # the fixed instructions a summarization adds to its input
SUMMARY_SECONDS_PER_PART = 60  # audio a summarization listens to per part, without chunks
MAX_SNAPSHOT_FRAMES = 120  # a snapshot result never lists more frames than this
ASR_SEGMENT_SECONDS = 10  # about one transcript segment per this much audio
MAX_ASR_SEGMENTS = 24
WORDS = (  # the vocabulary of emulated texts: plain words, so results read as prose
    "harbor", "lantern", "meadow", "circuit", "copper", "orchard", "signal", "canyon",
    "marble", "thunder", "velvet", "glacier", "compass", "ember", "falcon", "prism",
    "quarry", "ribbon", "saddle", "timber", "window", "zephyr",
)


def input_hash(capability: str, service_id: str, body: Body) -> str:
    """The short hash quoted in results: 12 hex digits of the submission key."""
    return submission_key(capability, service_id, body)[:HASH_CHARS]


def source_name(obj: Mapping[str, Any]) -> str:
    """How a result refers to its input: file name, else URL, else OSS path, else a hash."""
    for key in ("file_name", "url", "oss"):
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return value
    content = obj.get("content") or ""
    return f"inline-{submission_key('content', '', content)[:INLINE_NAME_CHARS]}"


def source_stem(obj: Mapping[str, Any]) -> str:
    """A path-safe stem of the source's base name (``clip`` for ``oss://b/v/clip.mp4``)."""
    name = source_name(obj)
    path = urlsplit(name).path if "://" in name else name
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "source"


def _words(rng: Any, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _out_prefix(body: Body) -> str:
    return str((body.get("output") or {}).get("oss") or "").rstrip("/")


def image_analyze(service_id: str, body: Body, seed: int) -> Built:
    document = body["document"]
    rng = seeded_random(seed, IMAGE_ANALYZE, service_id, input_hash(IMAGE_ANALYZE, service_id, body))
    mode = "description" if "vlm" in service_id else "text"
    content = (
        f"Emulated {mode} of {source_name(document)} "
        f"[h:{input_hash(IMAGE_ANALYZE, service_id, body)}]: {_words(rng, 6, 24)}."
    )
    data = {"content": content, "content_type": "text", "page_num": 1}
    return data, {"pv_count": 1, "token_count": max(1, len(content) // CHARS_PER_TOKEN)}


def object_detection(service_id: str, body: Body, seed: int) -> Built:
    rng = seeded_random(seed, OBJECT_DETECTION, service_id, input_hash(OBJECT_DETECTION, service_id, body))
    objects = []
    for _ in range(rng.randint(1, 4)):
        objects.append(
            {
                "confidence": f"{rng.uniform(0.5, 0.99):.2f}",
                "location": {
                    "X": rng.randint(0, 1600),
                    "Y": rng.randint(0, 1200),
                    "width": rng.randint(16, 480),
                    "height": rng.randint(16, 480),
                },
            }
        )
    return {"objects": objects}, {"image": 1}


def video_segmentation(service_id: str, body: Body, seed: int) -> Built:
    inp, out = body["input"], _out_prefix(body)
    h = input_hash(VIDEO_SEGMENTATION, service_id, body)
    rng = seeded_random(seed, VIDEO_SEGMENTATION, service_id, h)
    name, stem = source_name(inp), source_stem(inp)
    count = rng.randint(2, 5)
    total = round(rng.uniform(8.0 * count, 40.0 * count), 1)
    cuts = [0.0, *sorted(round(rng.uniform(0.0, total), 1) for _ in range(count - 1)), total]
    chunks: list[dict[str, Any]] = []
    frames = 0
    for i in range(count):
        start, end = cuts[i], max(cuts[i + 1], cuts[i] + 0.1)
        snapshots: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 3)):
            t = round(rng.uniform(start, end), 2)
            index = int(t * FPS)
            path = f"{out}/{stem}/chunk_{i:03d}/frame_{index:06d}.jpg"
            snapshots.append({"frame_index": index, "frame_time": t, "path": path})
        snapshots.sort(key=lambda s: s["frame_index"])
        frames += len(snapshots)
        transcript = f"[{name} {start:.1f}-{end:.1f}s h:{h}] {_words(rng, 5, 16)}."
        chunks.append(
            {
                "chunk_index": i,
                "start_time": start,
                "end_time": round(end, 1),
                "transcript": transcript,
                "snapshots": snapshots,
            }
        )
    return chunks, {"audio_token": int(total * AUDIO_TOKENS_PER_SECOND), "image_token": frames * IMAGE_TOKENS_PER_FRAME}


def video_snapshot(service_id: str, body: Body, seed: int) -> Built:
    inp, params = body["input"], body.get("parameters") or {}
    output = body.get("output") or {}
    h = input_hash(VIDEO_SNAPSHOT, service_id, body)
    rng = seeded_random(seed, VIDEO_SNAPSHOT, service_id, h)
    interval, fmt = int(params.get("interval", 1)), str(params.get("format", "jpg"))
    duration = rng.uniform(5.0, 90.0)
    frames = []
    for i in range(min(int(duration // interval) + 1, MAX_SNAPSHOT_FRAMES)):
        t = float(i * interval)
        if output.get("type", "oss") == "base64":
            path = base64.b64encode(f"{fmt} frame {i} of {source_name(inp)} h:{h}".encode()).decode()
        else:
            path = f"{_out_prefix(body)}/{source_stem(inp)}/frame_{i:05d}.{fmt}"
        frames.append({"frame_index": int(t * FPS), "frame_time": t, "path": path})
    return frames, {"image_count": len(frames)}


def video_summarization(service_id: str, body: Body, seed: int) -> Built:
    inp, params = body["input"], body.get("parameters") or {}
    h = input_hash(VIDEO_SUMMARIZATION, service_id, body)
    rng = seeded_random(seed, VIDEO_SUMMARIZATION, service_id, h)
    given = inp.get("chunks") or []
    name = (
        source_name(inp) if any(inp.get(k) for k in ("oss", "url", "file_name")) else f"{len(given)} chunks"
    )
    transcripts = [str(c.get("transcript") or "") for c in given] or [
        f"[{name} part {i}] {_words(rng, 5, 12)}." for i in range(rng.randint(2, 4))
    ]
    tags = sorted({rng.choice(WORDS) for _ in range(3)}) if params.get("generate_tags") else []
    chunks: list[dict[str, Any]] = []
    for i, transcript in enumerate(transcripts):
        text = f"(rewritten) {transcript}" if params.get("rewrite_transcript") else transcript
        meta = {
            "title": f"Part {i + 1} of {name}",
            "summary": f"Part {i + 1}: {_words(rng, 4, 10)}.",
            "tags": tags,
        }
        chunks.append({"index": i, "enhanced_transcript": text, "metadata": meta})
    summary = f"Summary of {name} [h:{h}] in {len(chunks)} parts: {_words(rng, 8, 20)}."
    data = {"video_metadata": {"title": f"About {name}", "summary": summary, "tags": tags}, "chunks": chunks}
    snapshots = sum(len(c.get("snapshots") or []) for c in given)
    usage = {
        "audio_token": 0 if given else AUDIO_TOKENS_PER_SECOND * SUMMARY_SECONDS_PER_PART * len(chunks),
        "image_token": IMAGE_TOKENS_PER_FRAME * snapshots if params.get("extract_snapshot") else 0,
        "input_token": sum(len(t) for t in transcripts) // CHARS_PER_TOKEN + SUMMARY_PROMPT_TOKENS,
        "output_token": (len(summary) + sum(len(c["enhanced_transcript"]) for c in chunks)) // CHARS_PER_TOKEN,
    }
    return data, usage


def audio_asr(service_id: str, body: Body, seed: int) -> Built:
    inp = body["input"]
    h = input_hash(AUDIO_ASR, service_id, body)
    rng = seeded_random(seed, AUDIO_ASR, service_id, h)
    duration = round(rng.uniform(3.0, 240.0), 2)
    count = max(1, min(int(duration // ASR_SEGMENT_SECONDS), MAX_ASR_SEGMENTS))
    step = duration / count
    segments = [
        {
            "start": round(i * step, 2),
            "end": round((i + 1) * step, 2),
            "text": f"({source_name(inp)} h:{h} #{i}) {_words(rng, 4, 14)}.",
        }
        for i in range(count)
    ]
    return segments, {"duration": duration}


BUILDERS: Mapping[str, Callable[[str, Body, int], Built]] = {
    IMAGE_ANALYZE: image_analyze,
    OBJECT_DETECTION: object_detection,
    VIDEO_SEGMENTATION: video_segmentation,
    VIDEO_SNAPSHOT: video_snapshot,
    VIDEO_SUMMARIZATION: video_summarization,
    AUDIO_ASR: audio_asr,
}


def build_result(capability: str, service_id: str, body: Body, seed: int) -> Built:
    """``(data, usage)`` for a validated body of ``capability``."""
    return BUILDERS[capability](service_id, body, seed)
