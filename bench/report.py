"""Write BENCHMARKS.md (and results.json) from the scenarios' measured figures.

Everything the markdown says with a number comes from the results: the figures, the notes
each scenario renders from its raw numbers, and the `method` block (how often RSS was
sampled). `load` reads results.json back, so the markdown can be rendered again without
measuring anything (`python -m bench --report-only`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .figures import ScenarioResult
from .processes import SAMPLE_EVERY


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def method() -> dict[str, Any]:
    """How the suite measures, as results.json records it (the markdown quotes it)."""
    return {"rss_sample_every_s": SAMPLE_EVERY}


def table(results: Sequence[ScenarioResult]) -> str:
    """The results table, one row per figure."""
    rows = ["| # | Scenario | Figure | Measured | Target | Result |", "|---|---|---|---|---|---|"]
    for n, r in enumerate(results, 1):
        if "error" in r.raw:
            rows.append(f"| {n} | {_cell(r.title)} | scenario failed to run | — | — | **ERROR** |")
            continue
        for f in r.figures:
            value = f"{f.shown()} {f.unit}".strip()
            if f.note:
                value += f" ({f.note})"
            verdict = {"PASS": "PASS", "MISS": "**MISS**"}.get(f.verdict, "")
            rows.append(f"| {n} | {_cell(r.title)} | {_cell(f.name)} | {_cell(value)} | {f.target_text()} "
                        f"| {verdict} |")
    return "\n".join(rows)


def markdown(results: Sequence[ScenarioResult], *, machine: dict[str, Any], command: str, date: str,
             total_seconds: float, partial: bool, how: Mapping[str, Any]) -> str:
    """BENCHMARKS.md; each result's `notes` must already be rendered from its raw numbers."""
    misses = [(r, f) for r in results for f in r.figures if f.verdict == "MISS"]
    errors = [r for r in results if "error" in r.raw]
    out = [
        "# Benchmarks",
        "",
        "Every figure below was measured by one run of the suite (`bench/`), against the emulator on "
        "127.0.0.1 in time-scaled mode; none is typed in. The machine is shared and noisy, so every figure "
        "is a ratio or a count measured within one scenario; absolute seconds are only context. Raw "
        "figures: `bench/results.json`.",
        "",
        f"- **Command:** `{command}`" + (" (a subset or quick run: not the full suite)" if partial else
                                          " — what `make bench` runs, with the project venv's Python"),
        f"- **Date:** {date}",
        f"- **Suite time:** {round(total_seconds, 1):.0f} s",
        f"- **Machine:** {machine['cores']} cores, {machine['ram_gb']} GB RAM, {machine['cpu_model']}; "
        f"Python {machine['python']}; {machine['os']}",
        "",
        "## Results",
        "",
        table(results),
        "",
        "## Missed targets",
        "",
    ]
    if not misses and not errors:
        out.append("None: every figure with a target met it.")
    for r, f in misses:
        out.append(f"- **{r.title} — {f.name}:** measured {f.shown()}{' ' + f.unit if f.unit else ''}, "
                   f"target {f.target_text()}.")
    for r in errors:
        out.append(f"- **{r.title}:** the scenario failed to run: `{_cell(str(r.raw['error']))[:500]}`")
    if misses:
        out += ["", "The measured reasons are in each scenario's notes below."]
    out += ["", "## Scenarios", ""]
    for n, r in enumerate(results, 1):
        out.append(f"### {n}. {r.title}")
        out.append("")
        out.append(f"Took {round(r.seconds, 1):.0f} s.")  # as results.json keeps it, so a re-render matches
        out.append("")
        for note in r.notes:
            out.append(f"- {note}")
        out.append("")
    out += [
        "## How it is measured",
        "",
        "- The pipeline runs as its own process, exactly as a user runs it: `python -m pipeline run MANIFEST "
        "--out F --state-dir D --endpoint URL --config FILE` with `DASHSCOPE_API_KEY` in the environment. "
        "The emulator runs as another process (`python -m pipeline emulator --port 0 --config FILE`), so "
        "each one's CPU and memory are its own.",
        "- Client CPU: user + system time from `os.wait4` on the pipeline process. Client memory: its "
        "`VmHWM` (peak RSS) from /proc, read every "
        f"{1000 * how['rss_sample_every_s']:g} ms until it exits (not `ru_maxrss`, which on Linux "
        "carries the parent's RSS at fork across the exec). Emulator CPU: /proc/<pid>/stat before and after.",
        "- Request rates, 429s, the busiest window and submissions are counted by the emulator "
        "(`GET /_emulator/counters`); `accepted_span` and `first_offered_at` are monotonic-clock times "
        "comparable with the suite's own `time.monotonic()`.",
        "- Time scale: the emulator's QPS window is 1/scale s and its task durations are divided by the "
        "scale; the client's config gets the same `time_scale`, which multiplies its QPS and divides its "
        "delays. Each scenario's notes say which scale it used.",
        "",
    ]
    return "\n".join(out)


def write(results: Sequence[ScenarioResult], *, markdown_path: Path, json_path: Path | None,
          machine: dict[str, Any], command: str, date: str, total_seconds: float, partial: bool,
          how: Mapping[str, Any] | None = None) -> None:
    """Write BENCHMARKS.md, and results.json unless `json_path` is None (a re-render)."""
    how = dict(how or method())
    markdown_path.write_text(markdown(results, machine=machine, command=command, date=date,
                                      total_seconds=total_seconds, partial=partial, how=how))
    if json_path is None:
        return
    data = {"command": command, "date": date, "suite_seconds": round(total_seconds, 1), "machine": machine,
            "partial": partial, "method": how, "scenarios": {r.key: r.to_dict() for r in results}}
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def load(json_path: Path) -> tuple[list[ScenarioResult], dict[str, Any]]:
    """The scenarios of a results.json (notes not yet rendered) and its header fields."""
    data = json.loads(json_path.read_text())
    results = [ScenarioResult.from_dict(key, scenario) for key, scenario in data["scenarios"].items()]
    header = {"machine": data["machine"], "command": data["command"], "date": data["date"],
              "total_seconds": float(data["suite_seconds"]), "partial": bool(data["partial"]),
              "how": data.get("method") or method()}
    return results, header
