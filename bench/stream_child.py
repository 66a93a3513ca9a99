"""`python -m bench.stream_child MANIFEST OUT ENDPOINT CONFIG`: the `stream_api` scenario's client.

It feeds `pipeline.stream` the manifest's lines as dicts (a generator: the items are never all in
memory, as a program streaming them from a database would) and takes every result line as it
comes. The run writes its summary as `pipeline run` does; the scenario reads its wall time
there, so both clients are timed the same way. Exits with the run's exit code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import pipeline


def rows(manifest: str) -> Iterator[dict[str, Any]]:
    with open(manifest, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


async def consume(manifest: str, out: str, endpoint: str, config: str) -> int:
    taken = 0
    async with pipeline.stream(rows(manifest), out=out, endpoint=endpoint, config=config) as lines:
        async for _line in lines:
            taken += 1
    assert lines.result is not None
    print(f"taken {taken}", file=sys.stderr)
    return int(lines.result.exit_code)


if __name__ == "__main__":
    sys.exit(asyncio.run(consume(*sys.argv[1:5])))
