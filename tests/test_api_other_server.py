"""`pipeline.run` and `pipeline.stream` against a server that is not the emulator: a few lines
of aiohttp written here from the wire protocol alone (docs/protocol.md) — a synchronous object
detection and an asynchronous image analysis whose tasks end at their first status check — and
DuckDB reading the Parquet export with one row per current (item, analysis)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import write_manifest

import pipeline
from pipeline.cli.main import main

KEY = "other-server-key"
WS = "/v3/openapi/workspaces/default"


def _app(seen: list[str]) -> web.Application:
    async def detect(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"code": "InvalidApiKey", "message": "no"}, status=401)
        body = await request.json()
        seen.append(body["image"]["url"])
        return web.json_response({"request_id": uuid.uuid4().hex, "latency": 3, "usage": {"image": 1},
                                  "result": {"objects": [{"confidence": "0.9",
                                                          "location": {"X": 1, "Y": 2, "width": 3, "height": 4}}]}})

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["document"]["url"])
        return web.json_response({"request_id": uuid.uuid4().hex, "latency": 3,
                                  "result": {"task_id": "t-" + uuid.uuid4().hex}})

    async def status(request: web.Request) -> web.Response:
        task = request.query["task_id"]
        return web.json_response({"request_id": uuid.uuid4().hex, "latency": 2,
                                  "usage": {"pv_count": 1, "token_count": 7},
                                  "result": {"task_id": task, "status": "SUCCESS",
                                             "data": {"content": "text", "content_type": "text", "page_num": 1}}})

    app = web.Application()
    app.router.add_post(WS + "/image-object-detection/{sid}", detect)
    app.router.add_post(WS + "/image-analyze/{sid}/async", create)
    app.router.add_get(WS + "/image-analyze/{sid}/async/task-status", status)
    return app


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """The server on 127.0.0.1 in a thread of its own; (its URL, the URLs it was sent)."""
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(_app(seen))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder.update(runner=runner, port=runner.addresses[0][1])
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield f"http://127.0.0.1:{holder['port']}", seen
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def _items(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "capability": cap, "url": f"https://example.com/{prefix}{i}.jpg"}
            for i in range(n) for cap in ("object_detection",)] + \
           [{"id": f"{prefix}-ocr-{i}", "capability": "image_analyze", "url": f"https://example.com/{prefix}o{i}.png"}
            for i in range(n)]


def test_run_and_a_parquet_export_against_another_server(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    """`pipeline.run` against it: every item once, exit 0; DuckDB reads the Parquet export:
    one row per (item, analysis), each a success with its source."""
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    url, seen = server
    manifest = write_manifest(tmp_path / "m.jsonl", _items("r", 4))
    result = pipeline.run(manifest, out=tmp_path / "r.jsonl", endpoint=url, api_key=KEY, report=False)
    assert result.exit_code == 0 and sorted(seen) == sorted(i["url"] for i in _items("r", 4))
    assert main(["export", "--format", "parquet", "--state-dir", str(tmp_path / "r.jsonl.state"),
                 "--out", str(tmp_path / "r.parquet")]) == 0
    rows = duckdb.sql(f"SELECT id, analysis, status, source FROM '{tmp_path / 'r.parquet'}' ORDER BY id").fetchall()
    assert len(rows) == 8 and {r[2] for r in rows} == {"SUCCESS"}
    assert {r[3] for r in rows} == {i["url"] for i in _items("r", 4)}


async def test_stream_against_another_server(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    """`pipeline.stream` against it: a durable line per item, each sent once."""
    url, seen = server
    got = []
    async with pipeline.stream(_items("s", 3), out=tmp_path / "s.jsonl", endpoint=url, api_key=KEY,
                               report=False) as lines:
        async for line in lines:
            got.append((line.id, line.status))
    assert sorted(got) == sorted((i["id"], "SUCCESS") for i in _items("s", 3))
    assert sorted(seen) == sorted(i["url"] for i in _items("s", 3))
