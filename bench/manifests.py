"""Synthetic manifests: every capability, every body distinct, written in big batches.

The emulator counts submissions per distinct body, so every line's source differs (`%(n)d`).
Also the per-capability facts the scenarios share: limits, URL segments, capability groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

#: Manifest line templates per capability: `%(id)s` and `%(n)d` are filled in.
TEMPLATES: dict[str, str] = {
    "image_analyze": '{"id":"%(id)s","capability":"image_analyze","url":"https://example.com/img/%(n)d.jpg"}',
    "object_detection": '{"id":"%(id)s","capability":"object_detection","url":"https://example.com/obj/%(n)d.png"}',
    "video_segmentation": ('{"id":"%(id)s","capability":"video_segmentation","oss":"oss://bucket/video/seg%(n)d.mp4",'
                           '"output":{"oss":"oss://bucket/out/"}}'),
    "video_snapshot": '{"id":"%(id)s","capability":"video_snapshot","url":"https://example.com/video/snap%(n)d.mp4"}',
    "video_summarization": ('{"id":"%(id)s","capability":"video_summarization","oss":"oss://bucket/video/sum%(n)d.mp4",'
                            '"output":"oss://bucket/sum/"}'),
    "audio_asr": '{"id":"%(id)s","capability":"audio_asr","url":"https://example.com/audio/talk%(n)d.mp3"}',
}
ALL_CAPS = tuple(TEMPLATES)
ASYNC_CAPS = tuple(c for c in ALL_CAPS if c != "object_detection")
#: The emulator names capabilities by URL segment, the pipeline by canonical name.
SEGMENT = {"image_analyze": "image-analyze", "object_detection": "image-object-detection",
           "video_segmentation": "video-segmentation", "video_snapshot": "video-snapshot",
           "video_summarization": "video-summarization", "audio_asr": "audio-asr"}
#: The service's published QPS limits, per capability.
LIMITS = {"image_analyze": 10, "object_detection": 20, "video_segmentation": 5,
          "video_snapshot": 5, "video_summarization": 5, "audio_asr": 5}
WRITE_BATCH = 10_000  # lines joined per write: one syscall per batch, bounded memory
READ_CHUNK = 1 << 20  # bytes per read when counting lines


def manifest_rows(n: int, caps: Sequence[str] = ALL_CAPS, *, start: int = 0) -> Iterable[str]:
    """`n` lines cycling over `caps`; ids `item-<number>` from `start`."""
    templates = [TEMPLATES[c] for c in caps]
    k = len(templates)
    for i in range(start, start + n):
        yield templates[i % k] % {"id": f"item-{i:07d}", "n": i}


def write_manifest(path: Path, n: int, caps: Sequence[str] = ALL_CAPS, *, start: int = 0,
                   mode: str = "w") -> Path:
    """Write (or with mode "a", append) `n` manifest lines to `path`; returns `path`."""
    with open(path, mode, encoding="utf-8") as f:
        batch: list[str] = []
        for row in manifest_rows(n, caps, start=start):
            batch.append(row)
            if len(batch) == WRITE_BATCH:
                f.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            f.write("\n".join(batch) + "\n")
    return path


def count_lines(path: Path) -> int:
    """Newlines in `path`, read in big chunks (a million-line results file in well under a second)."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            n += chunk.count(b"\n")
    return n
