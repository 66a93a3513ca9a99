"""Stream items from Python through the pipeline and load each result as it becomes durable
(docs/api.md, `pipeline.stream`): here into a SQLite table, as a notebook or a loader would.

    export DASHSCOPE_API_KEY=... PIPELINE_ENDPOINT=https://host
    python examples/api_stream.py items.jsonl results.jsonl db.sqlite

The items could come from anywhere (a database query, an API); here they are a JSONL file's lines
(blank lines and `#` comments skipped, as in a manifest: sample_manifests/catalog.jsonl works).
Run it again after an interruption: items already done are not sent again (nor yielded again),
and a changed item's new line replaces its row. Lines that were durable but not yet taken when a
run stopped are in results.jsonl; `media-pipeline export --changes` gives them (docs/api.md).
Exits with the run's exit code, as `media-pipeline run` would (README, "Exit codes").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import pipeline


def items(path: str) -> Iterator[dict[str, Any]]:
    """The file's items: one JSON object a line; blank lines and `#` comments skipped, as a manifest's."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                yield json.loads(line)


async def main(source: str, out: str, database: str) -> int:
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE IF NOT EXISTS results (id TEXT, analysis TEXT, status TEXT, data TEXT, "
               "PRIMARY KEY (id, analysis))")
    try:
        async with pipeline.stream(items(source), out=out) as lines:
            async for line in lines:  # each line is already in `out` and checkpointed
                db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                           (line.id, line.analysis, line.status.value, json.dumps(line.data)))
                db.commit()
    except pipeline.PipelineError as exc:  # refused: a bad option, another live run on `out`
        print(f"not started: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    finally:
        db.close()
    assert lines.result is not None
    summary = lines.result.summary
    print(f"{lines.result.outcome.value}: {summary['succeeded']} succeeded, {summary['failed']} failed "
          f"(exit {int(lines.result.exit_code)})")
    return int(lines.result.exit_code)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
