"""Batch pipeline for the OpenSearch multimodal content services.

The packages, from the bottom up (each says in its docstring what lives there and what it may
import; `tests/test_layers.py` checks the imports against it): core, config; manifest,
service, pacing, state, observe; upload; engine; api, cli. The emulator stands beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The public API (docs/api.md), imported on first use: `import pipeline` (and `--version`)
#: must not pay for the engine, aiohttp and the SDKs.
__all__ = ["Config", "ConfigError", "ExitCode", "ItemStatus", "ManifestError", "PipelineError", "ResultLine",
           "ResultStream", "RunOptions", "RunOutcome", "RunResult", "StateError", "StateLocked", "UsageError",
           "__version__", "arun", "run", "stream"]

if TYPE_CHECKING:
    from .api import (
        Config,
        ConfigError,
        ExitCode,
        ItemStatus,
        ManifestError,
        PipelineError,
        ResultLine,
        ResultStream,
        RunOptions,
        RunOutcome,
        RunResult,
        StateError,
        StateLocked,
        UsageError,
        arun,
        run,
        stream,
    )


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
