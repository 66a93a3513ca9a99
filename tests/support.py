"""Helpers for the engine's integration tests: manifests, results checks, CLI subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.job import Job
from pipeline.emulator.results import build_result
from pipeline.manifest.reader import read_manifest

REPO = Path(__file__).resolve().parent.parent

#: One source per capability; `{i}` is replaced by the item number so every body differs.
SOURCES: dict[str, dict[str, Any]] = {
    "image_analyze": {"url": "https://example.com/img/{i}.jpg"},
    "object_detection": {"url": "https://example.com/obj/{i}.png"},
    "video_segmentation": {"oss": "oss://bucket/video/seg{i}.mp4", "output": {"oss": "oss://bucket/out/"}},
    "video_snapshot": {"url": "https://example.com/video/snap{i}.mp4"},
    "video_summarization": {"oss": "oss://bucket/video/sum{i}.mp4", "output": "oss://bucket/sum/"},
    "audio_asr": {"url": "https://example.com/audio/talk{i}.mp3"},
}


def items(n: int, capabilities: Iterable[str] = tuple(SOURCES)) -> list[dict[str, Any]]:
    caps = list(capabilities)
    out = []
    for i in range(n):
        cap = caps[i % len(caps)]
        item: dict[str, Any] = {"id": f"item-{i:05d}", "capability": cap, "meta": {"n": i}}
        for key, value in SOURCES[cap].items():
            item[key] = value.format(i=i) if isinstance(value, str) else value
        out.append(item)
    return out


def write_manifest(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file; fails on a torn or non-JSON line."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "results file ends with a torn line"
    return [json.loads(line) for line in raw.splitlines()]


def assert_exactly_once(results: list[dict[str, Any]], expected_ids: Iterable[str]) -> None:
    ids = [r["id"] for r in results]
    dupes = {i for i in ids if ids.count(i) > 1} if len(ids) != len(set(ids)) else set()
    assert not dupes, f"duplicate result lines for {sorted(dupes)[:10]}"
    expected = set(expected_ids)
    assert set(ids) == expected, f"missing {sorted(expected - set(ids))[:10]}, extra {sorted(set(ids) - expected)[:10]}"


def expected_data(job: Job, seed: int) -> Any:
    """What the emulator returns for this job's body: proves the right result reached the right item."""
    cap = CAPABILITIES[job.capability]
    body = cap.build_body(job, None)
    data, _usage = build_result(cap.segment, job.service_id, body, seed)
    return data


def jobs_of(manifest: Path) -> dict[str, Job]:
    return {j.id: j for j in read_manifest(manifest) if isinstance(j, Job)}


def cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ARGS` to the end."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, check=False,
                          env=cli_env(env), timeout=timeout, cwd=cwd or REPO)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "DASHSCOPE_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PIPELINE_REPORT"] = "off"  # drawing the HTML report costs each run a second or two: report tests ask for it
    env.update(extra or {})
    return env


def config_file(path: Path, **values: Any) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def checkpoint_counts(state_dir: Path) -> dict[str, dict[str, int]]:
    """{capability: {"submitted": n, "SUCCESS": n, ...}} of a run's checkpoint, read-only; empty
    while the run is still creating it (for tests that wait on a live run's progress)."""
    from pipeline.state.checkpoint import Checkpoint

    if not (state_dir / Checkpoint.DB_NAME).exists():
        return {}
    try:
        state = Checkpoint.open(state_dir, read_only=True)
    except Exception:  # the run is creating it right now
        return {}
    try:
        return state.counts()
    except Exception:
        return {}
    finally:
        state.close()


class FakeClock:
    """The tests' one fake clock: it moves only when told to (`advance`), from `start`; or, with
    ``real=True``, it is the monotonic clock plus the jumps the test made (a server whose held
    tasks a test ends at once). Pass it as ``start_emulator(..., clock=...)`` or a client's clock."""

    def __init__(self, start: float = 1000.0, *, real: bool = False) -> None:
        self._now = start
        self._offset = 0.0
        self._real = real

    def __call__(self) -> float:
        return time.monotonic() + self._offset if self._real else self._now

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        self.advance(value - self())

    def advance(self, seconds: float) -> None:
        if self._real:
            self._offset += seconds
        else:
            self._now += seconds
