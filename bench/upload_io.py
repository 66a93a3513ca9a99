"""Upload benchmark: throughput to the local emulator's OSS and the client's RSS while uploading.

``python -m bench.upload_io [SIZE_MB]`` prints one JSON object. The emulator runs as its
own process (``python -m pipeline emulator --oss-port 0``), so the RSS measured here is the
uploading client's alone: resident memory is sampled every ``SAMPLE_S`` seconds while the
upload runs, and the peak is reported beside the baseline before it started. The goal is a
flat line: a 1 GB file must not cost more than ~150 MB, because it is streamed, never read whole.
Not part of ``make bench`` (it writes SIZE_MB twice to the temp dir: the file and its copy on
the emulator side).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.upload.transfer import OssSession, UploadSettings

__all__ = ["bench_upload", "current_rss_mb"]

SAMPLE_S = 0.05  # RSS sampling period while the upload runs
MIB = 1024 * 1024
BLOCK = 4 * MIB  # bytes written at a time when generating the input file


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _generate(path: Path, size: int) -> None:
    """A file of ``size`` bytes that is not all zeros (each 4 MB block differs), written in blocks."""
    seed = secrets.token_bytes(BLOCK)
    with path.open("wb") as out:
        for index, start in enumerate(range(0, size, BLOCK)):
            block = index.to_bytes(8, "big") + seed[8:]
            out.write(block[: min(BLOCK, size - start)])


async def _start_emulator(key_id: str, secret: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "emulator", "--port", "0", "--oss-port", "0",
        "--oss-key-id", key_id, "--oss-key-secret", secret, "--oss-bucket", "bench",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    for _ in range(3):
        line = (await proc.stdout.readline()).decode()
        if line.startswith("emulator OSS listening on "):
            return proc, line.split()[4]
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    raise RuntimeError("the emulator did not report its OSS port")


async def bench_upload(size_mb: int = 1024, *, part_size: int = 8 * MIB, workdir: Path | None = None) -> dict[str, Any]:
    """Upload a generated ``size_mb`` file to a fresh emulator; returns MB/s and RSS figures."""
    key_id, secret = "bench-key-id", secrets.token_hex(16)
    os.environ["OSS_ACCESS_KEY_ID"], os.environ["OSS_ACCESS_KEY_SECRET"] = key_id, secret
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        source = Path(tmp) / "big.mp4"
        _generate(source, size_mb * MIB)
        proc, url = await _start_emulator(key_id, secret)
        peak = baseline = current_rss_mb()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(SAMPLE_S):
                peak = max(peak, current_rss_mb())

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        try:
            settings = UploadSettings(bucket="bench", prefix="b", endpoint=url, part_size=part_size)
            started = time.perf_counter()
            async with OssSession(settings, Path(tmp) / "state") as session:
                obj = await session.ensure_uploaded(source)
            elapsed = time.perf_counter() - started
        finally:
            done.set()
            sampler.join()
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    return {
        "size_mb": size_mb,
        "part_size_mb": part_size / MIB,
        "seconds": round(elapsed, 2),
        "mb_per_s_including_hash": round(size_mb / elapsed, 1),
        "rss_baseline_mb": round(baseline, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "object": obj.oss_uri,
    }


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    print(json.dumps(asyncio.run(bench_upload(size)), indent=2))
