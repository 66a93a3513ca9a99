"""The measured side of the listing benchmark: list a catalog source and say how fast.

``python -m bench.listing_io oss ENDPOINT oss://BUCKET/PREFIX`` or ``python -m bench.listing_io
folder DIR`` lists every item through the pipeline's own sources (`list_oss`, `walk_folder`)
with a selection that takes images, videos and audio, and prints one JSON object: items,
seconds spent listing (interpreter start-up and imports excluded), pages, whether the listing
was complete, and this process's peak RSS (VmHWM). It runs as its own process so that the
parent reads its memory alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config.sections import UploadConfig
from pipeline.manifest.folder import walk_folder
from pipeline.manifest.listed import Selection

KIB_PER_MIB = 1024


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / KIB_PER_MIB
    except OSError:
        pass
    return 0.0


def selection() -> Selection:
    """Every media kind has an analysis, so every media file becomes an item."""
    return Selection(analyses_by_type={"image": ["image_analyze"], "video": ["video_snapshot"],
                                       "audio": ["audio_asr"]})


def list_source(kind: str, args: list[str]) -> dict[str, Any]:
    """List one source to its end; its figures."""
    chosen = selection()
    counts = chosen.new_counts()
    started = time.perf_counter()
    if kind == "oss":
        from pipeline.sources.oss_listing import list_oss

        endpoint, source = args
        items = list_oss(source, UploadConfig(endpoint=endpoint), chosen, counts=counts)
    else:
        items = walk_folder(args[0], chosen, counts=counts)  # type: ignore[assignment]
    listed = sum(1 for _ in items)
    seconds = time.perf_counter() - started
    return {"items": listed, "seconds": round(seconds, 3), "per_second": round(listed / seconds),
            "pages": counts.pages, "complete": counts.complete, "retries": counts.retries,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


if __name__ == "__main__":
    print(json.dumps(list_source(sys.argv[1], sys.argv[2:])))
