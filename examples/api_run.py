"""Run a manifest from Python and report how it ended (docs/api.md). To read the results with
DuckDB, export them as Parquet first (README, "From Python, and into DuckDB or pandas").

    DASHSCOPE_API_KEY=... PIPELINE_ENDPOINT=https://host python examples/api_run.py catalog.jsonl results.jsonl

Exits with the run's exit code, as `media-pipeline run` would: 0 every item succeeded, 1 some
failed, 3 stopped resumable (run it again), 2/4/5/6/7 a person must look (README, "Exit codes").
"""

from __future__ import annotations

import sys

import pipeline


def main(manifest: str, out: str) -> int:
    try:
        result = pipeline.run(manifest, out=out, max_duration="6h", progress="plain")
    except pipeline.PipelineError as exc:  # refused before it started: a bad option, another live run
        print(f"not started: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    summary = result.summary
    print(f"{result.outcome.value}: {summary['succeeded']} succeeded, {summary['failed']} failed "
          f"(exit {int(result.exit_code)})")
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
