"""Emulator settings: frozen dataclasses, validated on construction.

Time scale
----------
``time_scale`` (default 1.0) speeds the emulated service up: ``time_scale=20`` makes it run
twenty times faster than the real one. Two things scale, together:

* durations -- task processing times, slow-response delays, 429 bursts and the task TTL are
  given in *emulated* seconds and last ``seconds / time_scale`` real seconds;
* QPS -- the limit stays the published number (10, 20, 5) but the sliding window is
  ``1.0 / time_scale`` real seconds long. At ``time_scale=20`` image-analyze accepts at most
  10 requests in any 50 ms, i.e. 200 real requests per second.

Keeping the limit unscaled and shrinking the window keeps "QPS and durations scaled together":
a client whose limiter is scaled by the same factor behaves exactly as it would against the
real service, only faster. ``Retry-After`` is in *real* seconds: an integer (at least 1) when
``time_scale == 1``, the exact wait as a decimal string otherwise.

Every field has a default; ``EmulatorSettings()`` is the real service's published behaviour
with the documented default key ``emulator-key``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_API_KEY = "emulator-key"
#: The AccessKey pair the emulator's OSS subset accepts unless told otherwise (documented, not secret).
DEFAULT_OSS_KEY_ID = "emulator-oss-key-id"
DEFAULT_OSS_KEY_SECRET = "emulator-oss-key-secret"
MAX_BODY_BYTES = 8 * 1024 * 1024

IMAGE_ANALYZE = "image-analyze"
OBJECT_DETECTION = "image-object-detection"
VIDEO_SEGMENTATION = "video-segmentation"
VIDEO_SNAPSHOT = "video-snapshot"
VIDEO_SUMMARIZATION = "video-summarization"
AUDIO_ASR = "audio-asr"

#: Every capability, named by its URL path segment.
CAPABILITIES: tuple[str, ...] = (
    IMAGE_ANALYZE,
    OBJECT_DETECTION,
    VIDEO_SEGMENTATION,
    VIDEO_SNAPSHOT,
    VIDEO_SUMMARIZATION,
    AUDIO_ASR,
)
#: Capabilities served as create + task-status pairs (all but object detection).
ASYNC_CAPABILITIES: tuple[str, ...] = tuple(c for c in CAPABILITIES if c != OBJECT_DETECTION)

DEFAULT_QPS: Mapping[str, int] = {
    IMAGE_ANALYZE: 10,
    OBJECT_DETECTION: 20,
    VIDEO_SEGMENTATION: 5,
    VIDEO_SNAPSHOT: 5,
    VIDEO_SUMMARIZATION: 5,
    AUDIO_ASR: 5,
}

#: Uniform (min, max) processing time of a task, in emulated seconds.
DEFAULT_DURATIONS: Mapping[str, tuple[float, float]] = {
    IMAGE_ANALYZE: (2.0, 8.0),
    VIDEO_SEGMENTATION: (10.0, 40.0),
    VIDEO_SNAPSHOT: (5.0, 20.0),
    VIDEO_SUMMARIZATION: (15.0, 45.0),
    AUDIO_ASR: (5.0, 30.0),
}

#: Route kinds a fault restriction may name, as ``"<capability>:<kind>"``.
ROUTE_KINDS = ("create", "status", "detect")
#: What a ``bad_body`` answer carries instead of the service's JSON: an HTML page (a proxy's,
#: say), or the JSON envelope without the field the route answers with (a create's
#: ``result.task_id``, a status's ``result.status``, a detection's ``result``).
BAD_BODY_KINDS = ("not_json", "missing_fields")


class SettingsError(ValueError):
    """A setting is missing, unknown or out of range; the message names it (and its file)."""


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SettingsError(f"faults.{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {value!r}")
    return float(value)


def _duration_span(capability: str, value: Any) -> tuple[float, float]:
    """``[min, max]``, ``{min, max}`` or one number of emulated seconds, as a checked pair."""
    span = value
    if isinstance(value, Mapping):
        span = (value.get("min"), value.get("max"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        span = (value, value)
    if not isinstance(span, (list, tuple)) or len(span) != 2:
        raise SettingsError(f"durations.{capability} must be [min, max] seconds, got {value!r}")
    low = _seconds(f"durations.{capability} min", span[0])
    high = _seconds(f"durations.{capability} max", span[1])
    if high < low:
        raise SettingsError(f"durations.{capability}: max {high} is below min {low}")
    return low, high


def _unknown_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise SettingsError(f"unknown setting {where}{key!r}; known settings: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class FaultSettings:
    """Fault injection rates; all default to 0 (no faults).

    Rates are per-request probabilities drawn deterministically from the seed and the
    request (see ``faults.py``). ``routes`` restricts faults to some routes: each entry is a
    capability (``"audio-asr"``) or ``"<capability>:<kind>"`` with kind create/status/detect;
    empty means every API route. ``drop_after_processing`` makes a dropped create be processed
    first (task created, billed) so the client loses an accepted submission's answer.
    ``bad_body_rate`` answers 200 with a body the client cannot use (``bad_body``: one of
    ``BAD_BODY_KINDS``) after the request was processed: a create's task exists and is billed.
    """

    error_500_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    drop_rate: float = 0.0
    drop_after_processing: bool = False
    task_fail_rate: float = 0.0
    burst_429_rate: float = 0.0
    burst_429_seconds: float = 2.0
    bad_body_rate: float = 0.0
    bad_body: str = "not_json"
    routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("error_500_rate", "slow_rate", "drop_rate", "task_fail_rate", "burst_429_rate",
                     "bad_body_rate"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))
        for name in ("slow_seconds", "burst_429_seconds"):
            object.__setattr__(self, name, _seconds(f"faults.{name}", getattr(self, name)))
        if not isinstance(self.drop_after_processing, bool):
            raise SettingsError("faults.drop_after_processing must be true or false")
        if self.bad_body not in BAD_BODY_KINDS:
            raise SettingsError(f"faults.bad_body must be one of {', '.join(BAD_BODY_KINDS)}, "
                                f"got {str(self.bad_body)[:40]!r}")
        # Typed as a tuple, but YAML and the control route hand in whatever JSON held.
        routes: object = self.routes
        if not isinstance(routes, (list, tuple)) or not all(isinstance(r, str) for r in routes):
            raise SettingsError(f"faults.routes must be a list of route names, got {routes!r}")
        for route in routes:
            capability, _, kind = route.partition(":")
            if capability not in CAPABILITIES or (kind and kind not in ROUTE_KINDS):
                raise SettingsError(
                    f"faults.routes entry {route!r} is not a capability "
                    f"({', '.join(CAPABILITIES)}) optionally followed by :create, :status or :detect"
                )
        object.__setattr__(self, "routes", tuple(routes))

    def applies_to(self, capability: str, kind: str) -> bool:
        """Whether faults are enabled on this route."""
        return not self.routes or capability in self.routes or f"{capability}:{kind}" in self.routes

    def updated(self, changes: Mapping[str, Any]) -> FaultSettings:
        """A copy with ``changes`` applied; unknown keys raise :class:`SettingsError`."""
        _unknown_keys(changes, FaultSettings, "faults.")
        values = dict(changes)
        if "routes" in values and isinstance(values["routes"], list):
            values["routes"] = tuple(values["routes"])
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (routes as a list)."""
        data = dataclasses.asdict(self)
        data["routes"] = list(self.routes)
        return data


@dataclass(frozen=True)
class EmulatorSettings:
    """Everything the emulator can be told; see the module docstring for ``time_scale``.

    ``qps`` and ``durations`` may name only some capabilities: the others keep their defaults.
    ``task_ttl`` (emulated seconds, None = forever) is how long a finished task stays known.
    ``polls_count`` says whether task-status GETs count against the QPS window.
    """

    api_key: str = DEFAULT_API_KEY
    seed: int = 0
    time_scale: float = 1.0
    qps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_QPS))
    polls_count: bool = True
    durations: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    task_ttl: float | None = None
    faults: FaultSettings = field(default_factory=FaultSettings)
    max_body_bytes: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise SettingsError("api_key must be a non-empty string")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SettingsError(f"seed must be an integer, got {self.seed!r}")
        scale = self.time_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise SettingsError(f"time_scale must be a positive number, got {scale!r}")
        if not math.isfinite(scale):
            raise SettingsError("time_scale must be finite")
        object.__setattr__(self, "time_scale", float(scale))
        object.__setattr__(self, "qps", self._checked_qps(self.qps))
        object.__setattr__(self, "durations", self._checked_durations(self.durations))
        if not isinstance(self.polls_count, bool):
            raise SettingsError("polls_count must be true or false")
        if self.task_ttl is not None:
            object.__setattr__(self, "task_ttl", _seconds("task_ttl", self.task_ttl))
        if isinstance(self.faults, Mapping):
            object.__setattr__(self, "faults", FaultSettings().updated(self.faults))
        if not isinstance(self.faults, FaultSettings):
            raise SettingsError("faults must be a mapping of fault settings")
        size = self.max_body_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise SettingsError(f"max_body_bytes must be a positive integer, got {size!r}")

    @staticmethod
    def _checked_qps(qps: Mapping[str, Any]) -> dict[str, int]:
        if not isinstance(qps, Mapping):
            raise SettingsError("qps must be a mapping of capability to requests per second")
        merged = dict(DEFAULT_QPS)
        for capability, limit in qps.items():
            if capability not in CAPABILITIES:
                raise SettingsError(
                    f"qps: unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}"
                )
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise SettingsError(f"qps.{capability} must be a positive integer, got {limit!r}")
            merged[capability] = limit
        return merged

    @staticmethod
    def _checked_durations(durations: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        if not isinstance(durations, Mapping):
            raise SettingsError("durations must be a mapping of capability to [min, max] seconds")
        merged = dict(DEFAULT_DURATIONS)
        for capability, span in durations.items():
            if capability not in ASYNC_CAPABILITIES:
                raise SettingsError(
                    f"durations: unknown async capability {capability!r}; "
                    f"known: {', '.join(ASYNC_CAPABILITIES)}"
                )
            merged[capability] = _duration_span(capability, span)
        return merged

    @property
    def window_seconds(self) -> float:
        """Real length of the QPS sliding window."""
        return 1.0 / self.time_scale

    def real_seconds(self, emulated: float) -> float:
        """Real seconds that ``emulated`` seconds of service time last."""
        return emulated / self.time_scale

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "settings") -> EmulatorSettings:
        """Build from a plain mapping (e.g. YAML); errors name the key and ``source``."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        try:
            _unknown_keys(data, cls, "")
            values = dict(data)
            if isinstance(values.get("faults"), Mapping):
                values["faults"] = FaultSettings().updated(values["faults"])
            return cls(**values)
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> EmulatorSettings:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def load_settings(path: str | Path, **overrides: Any) -> EmulatorSettings:
    """Read a YAML file whose keys are :class:`EmulatorSettings` fields, then apply overrides."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: expected a mapping of settings at the top level")
    return EmulatorSettings.from_mapping({**data, **overrides}, source=str(path))
