"""The ``/_emulator`` control routes: read counters, change faults, forget tasks.

They need no auth (the emulator is a local test tool) and answer plain JSON:

* ``GET /_emulator/counters`` -- the counters snapshot (shape in ``counters.py``);
* ``POST /_emulator/counters/reset`` -- zero the counters;
* ``GET /_emulator/faults`` -- the fault settings in force;
* ``POST /_emulator/faults`` -- a JSON object of fault settings to change; answers the result,
  or 400 naming an unknown key or a bad value;
* ``POST /_emulator/forget-tasks`` -- forget every task (or ``{"task_ids": [...]}``), as if
  expired; answers ``{"forgotten": n}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .settings import SettingsError
from .state import STATE


def add_control_routes(app: web.Application) -> None:
    """Register the control routes on ``app``."""
    app.router.add_get("/_emulator/counters", _counters)
    app.router.add_post("/_emulator/counters/reset", _reset_counters)
    app.router.add_get("/_emulator/faults", _get_faults)
    app.router.add_post("/_emulator/faults", _set_faults)
    app.router.add_post("/_emulator/forget-tasks", _forget_tasks)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _bad_request(message: str) -> web.Response:
    return _json({"code": "InvalidParameter", "message": message}, status=400)


async def _counters(request: web.Request) -> web.Response:
    return _json(request.app[STATE].counters_snapshot())


async def _reset_counters(request: web.Request) -> web.Response:
    request.app[STATE].counters.reset()
    return _json({"reset": True})


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE].faults.to_dict())


async def _set_faults(request: web.Request) -> web.Response:
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise SettingsError("expected a JSON object of fault settings")
        faults = request.app[STATE].update_faults(changes)
    except (ValueError, SettingsError, TypeError) as exc:
        return _bad_request(str(exc))
    return _json(faults.to_dict())


async def _forget_tasks(request: web.Request) -> web.Response:
    task_ids = None
    if request.can_read_body:
        try:
            data = await request.json()
        except ValueError:
            return _bad_request("body must be JSON")
        task_ids = data.get("task_ids") if isinstance(data, dict) else None
        if task_ids is not None and not (
            isinstance(task_ids, list) and all(isinstance(t, str) for t in task_ids)
        ):
            return _bad_request("task_ids must be a list of strings")
    return _json({"forgotten": request.app[STATE].forget_tasks(task_ids)})
