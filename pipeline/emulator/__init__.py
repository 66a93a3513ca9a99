"""A local server that speaks the OpenSearch multimodal wire protocol (see docs/protocol.md).

Public API:

* :class:`EmulatorSettings`, :class:`FaultSettings`, :func:`load_settings` -- configuration;
* :func:`create_app` -- the ``aiohttp.web.Application``;
* :func:`start_emulator` -- async context manager serving it on a port;
* :class:`EmulatorThread` -- the same in a background thread, for synchronous code;
* :func:`submission_key` -- the key the counters use for a submitted body.

Control routes (no auth): ``GET /_emulator/counters``, ``POST /_emulator/counters/reset``,
``GET|POST /_emulator/faults``, ``POST /_emulator/forget-tasks``.

It stands beside the pipeline, not on it: the tests, the demo and the benchmarks drive the
pipeline against it as they would the real service.

May import: core.
"""

from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): `pipeline.emulator.cli` and `.settings` are read by
# the command line's parser, which must not pay for aiohttp's server to show `--help`.
_WHERE = {
    "api_path": "app", "create_app": "app", "submission_key": "counters",
    "EmulatorThread": "server", "RunningEmulator": "server", "start_emulator": "server",
    "CAPABILITIES": "settings", "DEFAULT_API_KEY": "settings", "EmulatorSettings": "settings",
    "FaultSettings": "settings", "SettingsError": "settings", "load_settings": "settings",
    "STATE": "state", "EmulatorState": "state",
}

if TYPE_CHECKING:
    from .app import api_path, create_app
    from .counters import submission_key
    from .server import EmulatorThread, RunningEmulator, start_emulator
    from .settings import (
        CAPABILITIES,
        DEFAULT_API_KEY,
        EmulatorSettings,
        FaultSettings,
        SettingsError,
        load_settings,
    )
    from .state import STATE, EmulatorState


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CAPABILITIES",
    "DEFAULT_API_KEY",
    "STATE",
    "EmulatorSettings",
    "EmulatorState",
    "EmulatorThread",
    "FaultSettings",
    "RunningEmulator",
    "SettingsError",
    "api_path",
    "create_app",
    "load_settings",
    "start_emulator",
    "submission_key",
]
