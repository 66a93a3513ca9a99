"""Scenario 8: uploading a large local file to OSS (the emulator's OSS subset, on loopback).

A generated file is hashed and uploaded through the official SDK's multipart uploader, as the
upload stage does for local media too big for a request body. The emulator runs as its own
process, so the memory figures are the client's alone: they must stay flat however big the
file (it is streamed, never read whole).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .figures import ScenarioResult
from .upload_io import bench_upload

TITLE = "Upload of a large local file to OSS"
RSS_TARGET_MB = 150


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    size = 64 if quick else 1024
    result = ScenarioResult("upload", TITLE)
    raw = asyncio.run(bench_upload(size))
    result.add(f"throughput, {size} MB file, hash included", raw["mb_per_s_including_hash"], unit="MB/s", digits=1)
    result.add("client peak RSS while uploading", raw["rss_peak_mb"], unit="MB", digits=1,
               target=("<=", RSS_TARGET_MB))
    result.add("client RSS growth during the upload", raw["rss_growth_mb"], unit="MB", digits=1)
    result.raw = raw
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    return [f"A {raw['size_mb']} MB file in {raw['part_size_mb']:g} MB parts took {raw['seconds']:.1f} s, "
            f"hashing included; the client's RSS went from {raw['rss_baseline_mb']:.1f} MB to at most "
            f"{raw['rss_peak_mb']:.1f} MB while it ran."]
