"""Load and validate the run configuration (frozen dataclasses).

Precedence, highest first: command-line flags > environment (`PIPELINE_*`) > `--config FILE`
> `configs/default.yaml`'s values, which are the dataclass defaults below. A wrong key, type or
value raises `ConfigError` naming the key and where it came from; the CLI turns that into
exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .backoff import PollPolicy, RetryPolicy
from .capabilities import CAPABILITIES
from .errors import ConfigError

#: Environment variables that override config-file values (flags override these).
ENV_KEYS = {
    "PIPELINE_ENDPOINT": "endpoint",
    "PIPELINE_WORKSPACE": "workspace",
    "PIPELINE_PROTOCOL": "protocol",
    "PIPELINE_TIME_SCALE": "time_scale",
    "PIPELINE_POLLS_SHARE_QPS": "polls_share_qps",
}


def _default_qps() -> dict[str, float]:
    return {name: float(cap.default_qps) for name, cap in CAPABILITIES.items()}


def _default_prices() -> dict[str, dict[str, float]]:
    # PROTOCOL.md "Billing facts". Keys: "request" is per successful request; any other key
    # is a usage field of that service's responses, priced per unit.
    return {
        "ops-image-analyze-ocr-001": {"request": 0.001},
        "ops-image-analyze-vlm-001": {"token_count": 0.002},
        "ops-object-detect-001": {"request": 0.002},
        "ops-object-detect-face-001": {"request": 0.001},
        "ops-video-segment-001": {},
        "ops-video-snapshot-001": {"request": 0.002},
        "ops-video-summarize-001": {"input_token": 0.002, "output_token": 0.004, "request": 0.001},
        "ops-audio-asr-001": {},
    }


def _default_usage_estimates() -> dict[str, dict[str, float]]:
    # Per-item usage assumed by `validate`'s cost estimate where the price is per token: an
    # upper bound for typical media, not a guarantee. Tune them to your catalog.
    return {
        "ops-image-analyze-vlm-001": {"token_count": 2000},
        "ops-video-summarize-001": {"input_token": 20000, "output_token": 2000},
    }


@dataclass(frozen=True)
class FailureThreshold:
    """Stop a run that is clearly misconfigured: when more than `max_ratio` of the first
    `window` finished items failed. `window: 0` turns the check off."""

    window: int = 100
    max_ratio: float = 0.5


@dataclass(frozen=True)
class AdaptivePolling:
    """Learn each capability's task duration and place the first poll where `target` of the
    tasks are already finished (a quantile tracked by stochastic approximation)."""

    enabled: bool = True
    target: float = 0.85


@dataclass(frozen=True)
class Config:
    endpoint: str | None = None
    protocol: str = "http"
    workspace: str = "default"
    #: Per-capability QPS limits, by canonical capability name.
    qps: Mapping[str, float] = field(default_factory=_default_qps)
    #: Fraction of each limit the client aims at; a little headroom absorbs network jitter.
    qps_headroom: float = 0.98
    #: Whether status polls draw from the same QPS budget as submits (undocumented upstream).
    polls_share_qps: bool = True
    #: Share of a busy QPS budget that submits get when polls wait too (weighted fair queuing).
    submit_share: float = 0.75
    submit_workers: int = 8
    max_in_flight: int = 1000
    queue_size: int = 256
    request_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    polling: PollPolicy = field(default_factory=PollPolicy)
    adaptive_polling: AdaptivePolling = field(default_factory=AdaptivePolling)
    failure_threshold: FailureThreshold = field(default_factory=FailureThreshold)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=_default_prices)
    #: Currency of the price table (the service bills in CNY).
    currency: str = "CNY"
    usage_estimates: Mapping[str, Mapping[str, float]] = field(default_factory=_default_usage_estimates)
    #: Divides every delay and multiplies every QPS limit. For the emulator's time-scaled mode
    #: only; leave at 1 against the real service.
    time_scale: float = 1.0
    #: Seconds between plain progress lines when stderr is not a terminal.
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (self.protocol in ("http", "https"), "protocol", "must be http or https"),
            (bool(self.workspace), "workspace", "must not be empty"),
            (0 < self.qps_headroom <= 1, "qps_headroom", "must be in (0, 1]"),
            (0 < self.submit_share < 1, "submit_share", "must be in (0, 1)"),
            (self.submit_workers >= 1, "submit_workers", "must be >= 1"),
            (self.max_in_flight >= 1, "max_in_flight", "must be >= 1"),
            (self.queue_size >= 1, "queue_size", "must be >= 1"),
            (self.request_timeout > 0, "request_timeout", "must be > 0 seconds"),
            (self.time_scale > 0, "time_scale", "must be > 0"),
            (self.progress_interval > 0, "progress_interval", "must be > 0 seconds"),
            (self.failure_threshold.window >= 0, "failure_threshold.window", "must be >= 0"),
            (0 <= self.failure_threshold.max_ratio <= 1, "failure_threshold.max_ratio",
             "must be in [0, 1]"),
            (0 < self.adaptive_polling.target < 1, "adaptive_polling.target", "must be in (0, 1)"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"{expected}, got {_get(self, key)!r}", key=key)
        for name, limit in self.qps.items():
            if name not in CAPABILITIES:
                raise ConfigError(f"unknown capability (known: {', '.join(CAPABILITIES)})",
                                  key=f"qps.{name}")
            if (not isinstance(limit, (int, float)) or isinstance(limit, bool)
                    or not math.isfinite(limit) or limit <= 0):
                raise ConfigError(f"must be a finite number > 0, got {limit!r}", key=f"qps.{name}")
        for section in ("prices", "usage_estimates"):
            for service_id, table in getattr(self, section).items():
                if not isinstance(table, Mapping):
                    raise ConfigError(f"must be a mapping of usage keys to numbers, got {table!r}",
                                      key=f"{section}.{service_id}")
                for unit, price in table.items():
                    if (isinstance(price, bool) or not isinstance(price, (int, float))
                            or not math.isfinite(price) or price < 0):
                        raise ConfigError(f"must be a number >= 0, got {price!r}",
                                          key=f"{section}.{service_id}.{unit}")

    # ---- effective values, with time_scale applied -------------------------------------
    def limit_rps(self, capability: str) -> float:
        """The service's limit in real requests per second (time scale applied)."""
        return self.qps.get(capability, CAPABILITIES[capability].default_qps) * self.time_scale

    def effective_qps(self, capability: str) -> float:
        """The rate the client aims at: the limit less the headroom."""
        return self.limit_rps(capability) * self.qps_headroom

    def effective_retry(self) -> RetryPolicy:
        s = self.time_scale
        r = self.retry
        return dataclasses.replace(r, base=r.base / s, max_delay=r.max_delay / s,
                                   retry_after_cap=r.retry_after_cap / s)

    def effective_polling(self) -> PollPolicy:
        s = self.time_scale
        p = self.polling
        return dataclasses.replace(p, first_delay=p.first_delay / s, max_delay=p.max_delay / s,
                                   timeout=p.timeout / s)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


_NESTED = {
    "retry": RetryPolicy,
    "polling": PollPolicy,
    "adaptive_polling": AdaptivePolling,
    "failure_threshold": FailureThreshold,
}


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    """Coerce ints to floats where a float is expected; reject everything else that differs."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", key=key, source=source)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {value!r}", key=key, source=source)
        return float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {value!r}", key=key, source=source)
    elif isinstance(default, str) or default is None:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}", key=key, source=source)
    elif isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a mapping, got {value!r}", key=key, source=source)
    return value


def _build(cls: type, values: Mapping[str, Any], prefix: str, source: str, base: Any) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(fields))})", key=dotted, source=source)
        current = getattr(base, key)
        if key in _NESTED and prefix == "":
            if not isinstance(value, Mapping):
                raise ConfigError(f"must be a mapping, got {value!r}", key=dotted, source=source)
            kwargs[key] = _build(_NESTED[key], value, f"{dotted}.", source, current)
        elif key == "qps" and prefix == "":
            _check_type(dotted, value, current, source)
            kwargs[key] = {**current, **value}
        elif key in ("prices", "usage_estimates") and prefix == "":
            _check_type(dotted, value, current, source)
            kwargs[key] = {**current, **value}
        else:
            kwargs[key] = _check_type(dotted, value, current, source)
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError as exc:
        # The dataclasses name their keys already ("retry.base"); add the file.
        raise ConfigError(exc.message, key=exc.key, source=source) from None
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(str(exc), key=prefix.rstrip(".") or None, source=source) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the YAML file, then `PIPELINE_*` environment variables, then flags."""
    config = Config()
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", source=source) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", source=source) from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError("the top level must be a mapping of keys to values", source=source)
        config = _build(Config, data, "", source, config)
    env = os.environ if env is None else env
    from_env: dict[str, Any] = {}
    for var, key in ENV_KEYS.items():
        if var in env:
            from_env[key] = _parse_env(var, env[var], getattr(config, key))
    if from_env:
        config = _build(Config, from_env, "", "environment", config)
    if overrides:
        flags = {k: v for k, v in overrides.items() if v is not None}
        if flags:
            config = _build(Config, flags, "", "command line", config)
    return config


def _parse_env(var: str, raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"must be true or false, got {raw!r}", key=var, source="environment")
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"must be a number, got {raw!r}", key=var, source="environment") from None
    return raw
