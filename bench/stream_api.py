"""Scenario 14: `pipeline.stream` against `pipeline run`, limits off, in the same benchmark run.

100,000 items (object detection and image analysis, half each: the synchronous path and the
task path) through `python -m pipeline run MANIFEST` and through `pipeline.stream` in a child
process fed the same manifest's lines as dicts (`bench.stream_child`), each run against a fresh
emulator with the limits effectively off and tasks done at once (`client_ceiling`'s settings),
so what is measured is the client. The runs go command line, stream, stream, command line
(ABBA), so a machine that gets busier or quieter during the scenario weighs on both alike; each
side's rate is its results over its runs' own wall time (from their summaries: interpreter
start-up excluded, for both). The target: the stream's rate at least TARGET_RATIO of the
command line's.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .emulator_process import Emulator, fast_client, fast_emulator, fast_settings_raw
from .environment import PYTHON, write_yaml
from .figures import ScenarioResult
from .manifests import write_manifest
from .processes import measure, run_pipeline

TITLE = "pipeline.stream vs pipeline run (limits off)"
CAPS = ("object_detection", "image_analyze")
TARGET_RATIO = 0.9  # the stream's results/s over the command line's, at least
TIMEOUT_S = 1800.0  # per run: a busy shared machine is slow


def _cli(work: Path, manifest: Path, name: str) -> dict[str, Any]:
    with Emulator(fast_emulator(), work / f"emu-{name}") as emu:
        done = run_pipeline(manifest, work, emu.url, fast_client(), name=name, timeout=TIMEOUT_S)
    return {"succeeded": done.summary["succeeded"], "run_s": done.run_seconds, "process_wall_s": done.proc.wall,
            "cpu_s": done.proc.cpu}


def _stream(work: Path, manifest: Path, name: str) -> dict[str, Any]:
    run_dir = work / name
    run_dir.mkdir()
    out = run_dir / "results.jsonl"
    config = write_yaml(run_dir / "config.yaml", fast_client())
    with Emulator(fast_emulator(), work / f"emu-{name}") as emu:
        proc = measure([PYTHON, "-m", "bench.stream_child", str(manifest), str(out), emu.url, str(config)], run_dir,
                       name, timeout=TIMEOUT_S)
    if proc.exit_code != 0:
        raise RuntimeError(f"the stream client failed (exit {proc.exit_code}):\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "results.summary.json").read_text())
    return {"succeeded": summary["succeeded"], "run_s": float(summary["wall_time_s"]), "process_wall_s": proc.wall,
            "cpu_s": proc.cpu}


def _rate(runs: list[dict[str, Any]]) -> float:
    return sum(r["succeeded"] for r in runs) / sum(r["run_s"] for r in runs)


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    items = 2_000 if quick else 100_000
    result = ScenarioResult("stream_api", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "items.jsonl", items, CAPS)
        cli = [_cli(work, manifest, "cli-1")]
        stream = [_stream(work, manifest, "stream-1"), _stream(work, manifest, "stream-2")]
        cli.append(_cli(work, manifest, "cli-2"))
    cli_rate, stream_rate = _rate(cli), _rate(stream)
    result.add("results per second, pipeline run", cli_rate, unit="results/s", digits=0)
    result.add("results per second, pipeline.stream", stream_rate, unit="results/s", digits=0)
    result.add("pipeline.stream ÷ pipeline run", stream_rate / cli_rate, target=(">=", TARGET_RATIO), digits=3)
    for label, runs in (("pipeline run", cli), ("pipeline.stream", stream)):
        result.add(f"client CPU ms per result, {label}", 1000 * sum(r["cpu_s"] for r in runs) / (2 * items),
                   unit="ms", digits=3)
    result.raw = {"items": items, "caps": list(CAPS), "cli": cli, "stream": stream, "cli_rate": cli_rate,
                  "stream_rate": stream_rate, "ratio": stream_rate / cli_rate, **fast_settings_raw()}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    cli, stream = raw["cli"], raw["stream"]
    return [
        f"{raw['items']:,} items ({' and '.join(raw['caps'])}, alternating) per run, limits {raw['limit_qps']:,} QPS "
        f"per capability and tasks done at once, in the order run, stream, stream, run: `pipeline run` took "
        f"{cli[0]['run_s']:.1f} s and {cli[1]['run_s']:.1f} s, `pipeline.stream` {stream[0]['run_s']:.1f} s and "
        f"{stream[1]['run_s']:.1f} s (each run's own wall time, from its summary), so the stream ran at "
        f"{raw['ratio']:.2f} of the command line's rate on this {machine['cores']}-core machine. The stream's client "
        "parses the same manifest lines into dicts and consumes every line as it comes; its items are copied "
        "through JSON once more when checked (what lets a caller reuse its dicts)."]
