"""Logging for the command line: readable text on stderr, or one JSON object per line.

A filter on the handler replaces the API key (from DASHSCOPE_API_KEY) wherever it appears in
a formatted record: a last line of defence, since no code path is meant to log it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from ..core.errors import redact
from ..core.loggable import WIRE_LOGGER


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, and the `event`, `progress` and
    `summary` extras when a record carries them (scheduled runs parse these)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("event", "progress", "summary"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that blanks the API key out of every formatted record."""

    #: Shorter "keys" (test values like "k") would blank out ordinary letters of every line.
    MIN_SECRET = 8

    # Always the current sys.stderr, so rich's live display can redirect it while it runs.
    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        secret = (os.environ.get("DASHSCOPE_API_KEY") or "").strip()
        return redact(super().format(record), secret if len(secret) >= self.MIN_SECRET else None)


def setup_logging(*, verbose: int = 0, quiet: bool = False, fmt: str = "text") -> None:
    """Send the `pipeline` loggers to stderr: INFO (DEBUG with `verbose`, WARNING with `quiet`),
    as text or, with `fmt="json"`, one JSON object per line. Safe to call again: it replaces
    the handler instead of adding a second one."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = RedactingHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # -v: what each stage decided (pipeline.run, pipeline.pacing at DEBUG); -vv: every request
    # too (pipeline.wire, one line per HTTP exchange) and aiohttp's own records.
    logging.getLogger(WIRE_LOGGER).setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if verbose < 2:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
