"""A local server that speaks the OpenSearch multimodal wire protocol (see docs/protocol.md).

Public API:

* :class:`EmulatorSettings`, :class:`FaultSettings`, :func:`load_settings` -- configuration;
* :func:`create_app` -- the ``aiohttp.web.Application``;
* :func:`start_emulator` -- async context manager serving it on a port;
* :class:`EmulatorThread` -- the same in a background thread, for synchronous code;
* :func:`submission_key` -- the key the counters use for a submitted body.

Control routes (no auth): ``GET /_emulator/counters``, ``POST /_emulator/counters/reset``,
``GET|POST /_emulator/faults``, ``POST /_emulator/forget-tasks``.
"""

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
