"""HTTP helpers for the emulator's protocol tests: paths, a create, a poll, a poll until done."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from pipeline.emulator import api_path

Samples = dict[str, tuple[str, dict[str, Any]]]
KEY = "rules-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
POLL_EVERY = 0.01  # real seconds between polls: tasks of the fast emulator take 10-30 ms
MAX_POLLS = 200


def route_path(capability: str, service_id: str, kind: str = "create") -> str:
    """The path of a create (a detect for object detection) or a status route."""
    if capability == "image-object-detection" and kind == "create":
        kind = "detect"
    return api_path(capability, service_id, kind)


async def post(
    http: aiohttp.ClientSession, capability: str, sid: str, body: Any
) -> tuple[int, dict[str, Any], Any]:
    """POST a create body; (HTTP status, headers, JSON body)."""
    async with http.post(route_path(capability, sid), json=body) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def status(http: aiohttp.ClientSession, capability: str, sid: str, task_id: str) -> tuple[int, Any]:
    """GET a task's status; (HTTP status, JSON body)."""
    async with http.get(route_path(capability, sid, "status"), params={"task_id": task_id}) as resp:
        return resp.status, await resp.json()


async def until_done(http: aiohttp.ClientSession, capability: str, sid: str, task_id: str) -> Any:
    """Poll until the task is no longer PENDING; returns the final status body."""
    for _ in range(MAX_POLLS):
        code, body = await status(http, capability, sid, task_id)
        assert code == 200, body
        if body["result"]["status"] != "PENDING":
            return body
        await asyncio.sleep(POLL_EVERY)
    raise AssertionError("task never finished")


def session(url: str, headers: dict[str, str] | None = AUTH) -> aiohttp.ClientSession:
    """A session on `url` that sends the rules key (or the given headers)."""
    return aiohttp.ClientSession(base_url=url, headers=headers)
