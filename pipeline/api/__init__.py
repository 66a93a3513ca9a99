"""The public Python API: `run` and `arun` (a catalog run from a program: an orchestrator's
task, a notebook) and `stream` (item dicts in, durable result lines out), with the command
line's behaviour, files, locks and exit codes, its options by their Python names, checked before
anything starts, and none of its process-wide habits (no `sys.exit`, no signal handlers unless
asked, no logging set-up). `pipeline.run` and friends are
these, imported lazily so that `import pipeline` stays cheap.

May import: core, config, manifest, service, pacing, state, observe, upload, engine, cli.
"""

from __future__ import annotations

from ..config.load import Config
from ..core.errors import ConfigError, ManifestError, PipelineError, StateError, StateLocked, UsageError
from ..core.exit_codes import ExitCode
from ..core.outcome import RunOutcome
from ..core.results import ItemStatus, ResultLine
from ..engine.closing import RunResult
from .options import RunOptions
from .running import arun, run
from .streaming import ResultStream, stream

__all__ = ["Config", "ConfigError", "ExitCode", "ItemStatus", "ManifestError", "PipelineError", "ResultLine",
           "ResultStream", "RunOptions", "RunOutcome", "RunResult", "StateError", "StateLocked", "UsageError", "arun",
           "run", "stream"]
