"""The measured side of the nightly catalog diff: read a catalog, or decide its delta, and say how fast.

``python -m bench.catalog_diff_io read MANIFEST`` reads every item the way a run does (the
run's `ItemSource`: parsed and validated, one `Job` per analysis) and does nothing else.
``python -m bench.catalog_diff_io decide MANIFEST STATE_DIR`` decides the delta against a run's
state the way a run's reader does, sending nothing (`validate --state-dir`'s `delta_report`: the
same read, each unit's fingerprint, one checkpoint query per batch, the decisions, the keys seen
noted on disk, then the vanished count). Each prints one JSON object: seconds (imports
excluded), counts, and this process's peak RSS (VmHWM), so the parent reads its memory alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from pipeline.config.load import Config
from pipeline.engine.item_source import ItemSource

from .listing_io import peak_rss_mb


async def _read(manifest: str) -> int:
    source = ItemSource(manifest, Config())
    await source.open()
    units = 0
    async for _ in source.items():
        units += 1
    return units


def main(argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    if argv[0] == "read":
        figures: dict[str, Any] = {"units": anyio.run(_read, argv[1])}
    else:
        from pipeline.cli.validate_delta import delta_report

        report = delta_report(argv[1], Config(), state_dir=Path(argv[2]))
        figures = {k: report[k] for k in ("new", "changed", "unchanged", "vanished", "to_send")}
    figures.update(seconds=round(time.perf_counter() - started, 3), peak_rss_mb=round(peak_rss_mb(), 1))
    return figures


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
