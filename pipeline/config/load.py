"""Load and validate the run configuration (frozen dataclasses).

Precedence, highest first: command-line flags (`overrides`) > environment (`PIPELINE_*`) >
`--config FILE` > the dataclass defaults below, which `pipeline/data/default.yaml` documents
key by key. The layers are merged first and validated once, as a whole, before anything is
written: a wrong key, type or value raises `ConfigError` whose `key` is the config key and
whose `source` is what the user typed it into: the flag (`--endpoint`), the variable
(`PIPELINE_ENDPOINT`) or the file's path. The CLI turns that into exit code 2.

The time scale (`Config.time_scale`) is a test and demo facility for the local emulator: it is
not a config-file key, only `PIPELINE_TIME_SCALE` (or `overrides`) sets it, and a scale other
than 1 is refused unless the endpoint is a loopback address.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..core.backoff import PollPolicy, RetryPolicy
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped, shown
from ..core.endpoint import build_base_url
from ..core.errors import ConfigError
from ..core.templates import output_templates
from ..core.yaml_strict import Refused, StrictLoader, yaml_problem
from .checks import (
    coerce,
    extra_problem,
    finite_number,
    is_loopback_host,
    limiter_problem,
    metrics_file_problem,
    parse_duration,
    parse_env,
    ping_url_problem,
    pushgateway_problem,
)
from .pricing import default_prices, default_usage_estimates
from .sections import FailureThreshold, UploadConfig

__all__ = [
    "ENV_KEYS", "ENV_ONLY_KEYS", "FILE_KEYS", "FLAG_KEYS", "Config", "FailureThreshold",
    "flag_of", "load_config", "parse_duration",
]

#: Environment variables that override config-file values (flags override these).
ENV_KEYS = {
    "PIPELINE_ENDPOINT": "endpoint",
    "PIPELINE_WORKSPACE": "workspace",
    "PIPELINE_PROTOCOL": "protocol",
    "PIPELINE_TIME_SCALE": "time_scale",
    "PIPELINE_POLLS_SHARE_QPS": "polls_share_qps",
    "PIPELINE_MAX_COST": "max_cost",
    "PIPELINE_LIMITER": "limiter",
}
#: The config keys `run` takes as flags, each spelled as argparse names its dest (`flag_of`):
#: the command line's parser offers exactly these, and an error names the flag the user typed.
FLAG_KEYS = ("endpoint", "workspace", "max_cost", "max_duration", "metrics_file", "pushgateway", "ping_url",
             "limiter")


def flag_of(key: str) -> str:
    """The flag that sets config key `key`: `max_cost` -> `--max-cost`."""
    return "--" + key.replace("_", "-")


#: Keys a config file may not set: the time scale would make a real run break the service's
#: QPS limits, so it stays a deliberate, visible act (an environment variable or a test).
ENV_ONLY_KEYS = frozenset({"time_scale"})

_LIMITER_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]+")


def _default_qps() -> dict[str, float]:
    return {name: float(cap.default_qps) for name, cap in CAPABILITIES.items()}


@dataclass(frozen=True)
class Config:
    """Everything a run is configured with; validated as a whole when constructed."""

    endpoint: str | None = None
    #: For a bare-host endpoint only. https, so that the bearer key never travels in clear
    #: text unless asked for (a full http:// URL, or protocol http).
    protocol: str = "https"
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
    failure_threshold: FailureThreshold = field(default_factory=FailureThreshold)
    upload: UploadConfig = field(default_factory=UploadConfig)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=default_prices)
    #: Currency of the price table (the service bills in CNY).
    currency: str = "CNY"
    usage_estimates: Mapping[str, Mapping[str, float]] = field(default_factory=default_usage_estimates)
    #: OSS prefix templates by canonical capability name (an alias in the file is resolved when
    #: loaded): the `output` of an analysis of that capability that gives none.
    outputs: Mapping[str, str] = field(default_factory=dict)
    #: Analyses of listed items (a folder, an OSS prefix) by media kind (`manifest.listed.Selection`).
    analyses_by_type: Mapping[str, Any] = field(default_factory=dict)
    #: Spend cap in `currency`: settled plus reserved cost never goes past it. None: no cap.
    max_cost: float | None = None
    #: Seconds the run may last before it stops, resumable. None: no limit.
    max_duration: float | None = None
    #: Prometheus textfile written during and after the run; its directory must exist.
    metrics_file: str | None = None
    #: Prometheus Pushgateway URL the final metrics are pushed to.
    pushgateway: str | None = None
    #: URL pinged at start and end (healthchecks.io style dead man's switch).
    ping_url: str | None = None
    #: The QPS pacer: "memory" (this process) or a redis:// / rediss:// URL shared by processes.
    limiter: str = "memory"
    #: Key prefix in the shared limiter, so unrelated accounts can share one Redis.
    limiter_namespace: str | None = None
    #: Seconds between plain progress lines when stderr is not a terminal.
    progress_interval: float = 10.0
    #: Test/demo facility (PIPELINE_TIME_SCALE, never a file key): divides every delay and
    #: multiplies every QPS limit, to match an emulator started with the same time scale.
    time_scale: float = 1.0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)  # key -> where it was set

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
            (finite_number(self.time_scale) and self.time_scale > 0, "time_scale", "must be a finite number > 0"),
            (self.progress_interval > 0, "progress_interval", "must be > 0 seconds"),
            (self.failure_threshold.window >= 0, "failure_threshold.window", "must be >= 0"),
            (0 <= self.failure_threshold.max_ratio <= 1, "failure_threshold.max_ratio",
             "must be in [0, 1]"),
            (bool(self.currency.strip()), "currency", "must not be empty"),
            (self.max_cost is None or (finite_number(self.max_cost) and self.max_cost >= 0), "max_cost",
             "must be a finite amount >= 0 (in the price table's currency)"),
            (self.max_duration is None or (finite_number(self.max_duration) and self.max_duration > 0),
             "max_duration", "must be a finite number of seconds > 0"),
            (self.limiter_namespace is None or bool(_LIMITER_NAMESPACE.fullmatch(self.limiter_namespace)),
             "limiter_namespace", "must be letters, digits, '_', '.', ':' or '-'"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"{expected}, got {shown(_get(self, key))}", key=key)
        self._check_tables()
        object.__setattr__(self, "outputs", output_templates(self.outputs))
        self._check_services()

    def _check_tables(self) -> None:
        for name, limit in self.qps.items():
            if name not in CAPABILITIES:
                raise ConfigError(f"unknown capability (known: {', '.join(CAPABILITIES)})",
                                  key=f"qps.{clipped(name)}")
            if not finite_number(limit) or limit <= 0:
                raise ConfigError(f"must be a finite number > 0, got {shown(limit)}", key=f"qps.{name}")
        for section in ("prices", "usage_estimates"):
            for service_id, table in getattr(self, section).items():
                if not isinstance(table, Mapping):
                    raise ConfigError(f"must be a mapping of usage keys to numbers, got {shown(table)}",
                                      key=f"{section}.{clipped(service_id)}")
                for unit, price in table.items():
                    if not finite_number(price) or price < 0:
                        raise ConfigError(f"must be a number >= 0, got {shown(price)}",
                                          key=f"{section}.{clipped(service_id)}.{clipped(unit)}")

    def _check_services(self) -> None:
        # The endpoint is parsed exactly as the client will parse it, so a run never gets as
        # far as writing state with an address it cannot use. Without an endpoint (validate,
        # status) the protocol and workspace are still checked the same way, on a stand-in host.
        base_url = build_base_url(self.endpoint if self.endpoint is not None else "localhost",
                                  self.protocol, self.workspace)
        host = urlsplit(base_url).hostname or ""
        if self.time_scale != 1 and self.endpoint is not None and not is_loopback_host(host):
            raise ConfigError(
                f"time scale {self.time_scale:g} (PIPELINE_TIME_SCALE) is a test/demo facility for the local "
                f"emulator and needs a loopback endpoint (127.0.0.0/8, ::1, localhost), not {shown(host)}: "
                "unset PIPELINE_TIME_SCALE to run against the service", key="time_scale")
        for key, url_problem in (("pushgateway", pushgateway_problem), ("ping_url", ping_url_problem)):
            url = getattr(self, key)
            problem = None if url is None else url_problem(url)
            if problem:
                raise ConfigError(problem, key=key)
        problem = limiter_problem(self.limiter)
        if problem:
            raise ConfigError(problem, key="limiter")
        problem = None if self.metrics_file is None else metrics_file_problem(self.metrics_file)
        for key in ("metrics_file", "pushgateway"):
            problem = problem or (extra_problem(key) if getattr(self, key) is not None else None)
            if problem:
                raise ConfigError(problem, key=key)

    # ---- effective values, with time_scale applied -------------------------------------
    def limit_rps(self, capability: str) -> float:
        """The service's limit in real requests per second (time scale applied)."""
        return self.qps.get(capability, CAPABILITIES[capability].default_qps) * self.time_scale

    def effective_qps(self, capability: str) -> float:
        """The rate the client aims at: the limit less the headroom."""
        return self.limit_rps(capability) * self.qps_headroom

    def effective_retry(self) -> RetryPolicy:
        """The retry policy with its delays divided by the time scale."""
        s = self.time_scale
        r = self.retry
        return dataclasses.replace(r, base=r.base / s, max_delay=r.max_delay / s,
                                   retry_after_cap=r.retry_after_cap / s)

    def effective_polling(self) -> PollPolicy:
        """The poll policy with its delays divided by the time scale."""
        s = self.time_scale
        p = self.polling
        return dataclasses.replace(p, first_delay=p.first_delay / s, max_delay=p.max_delay / s,
                                   timeout=p.timeout / s)


#: Every key a `--config` file may set (the time scale is not one).
FILE_KEYS = frozenset(f.name for f in dataclasses.fields(Config)) - ENV_ONLY_KEYS - {"sources"}


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


_NESTED: dict[str, type] = {
    "retry": RetryPolicy,
    "polling": PollPolicy,
    "failure_threshold": FailureThreshold,
    "upload": UploadConfig,
}
#: Mappings that a layer extends entry by entry instead of replacing.
_TABLES = ("qps", "prices", "usage_estimates", "outputs")
_DEFAULTS = Config()


def _unknown(key: str, known: frozenset[str] | set[str], source: str) -> ConfigError:
    return ConfigError(f"unknown key (known: {', '.join(sorted(known))})", key=clipped(key), source=source)


def _merge(merged: dict[str, Any], origin: dict[str, str], values: Mapping[Any, Any], source: str,
           *, from_file: bool) -> None:
    """Type-check one layer's values and lay them over `merged`, noting each key's source."""
    for key, value in values.items():
        if from_file and key in ENV_ONLY_KEYS:
            raise ConfigError("is not a config-file key: the time scale is a test/demo facility, set only "
                              "by the PIPELINE_TIME_SCALE environment variable", key=str(key), source=source)
        if key not in FILE_KEYS | ENV_ONLY_KEYS:
            raise _unknown(str(key), FILE_KEYS, source)
        if key in _NESTED:
            if not isinstance(value, Mapping):
                raise ConfigError(f"must be a mapping, got {shown(value)}", key=key, source=source)
            defaults = _NESTED[key]()
            known = {f.name for f in dataclasses.fields(defaults)}
            section = merged.setdefault(key, {})
            for sub, sub_value in value.items():
                dotted = f"{key}.{sub}"
                if sub not in known:
                    raise _unknown(dotted, known, source)
                section[sub] = coerce(dotted, sub_value, getattr(defaults, sub), source)
                origin[dotted] = source
        elif key in _TABLES:
            coerce(key, value, getattr(_DEFAULTS, key), source)
            merged.setdefault(key, {}).update(value)
            origin.update({f"{key}.{name}": source for name in value})
        else:
            merged[key] = coerce(key, value, getattr(_DEFAULTS, key), source)
            origin[key] = source


def _construct(merged: Mapping[str, Any], origin: Mapping[str, str]) -> Config:
    kwargs = dict(merged)
    try:
        for key, cls in _NESTED.items():
            if key in kwargs:
                kwargs[key] = cls(**kwargs[key])
        for key in _TABLES:
            if key in kwargs:
                kwargs[key] = {**getattr(_DEFAULTS, key), **kwargs[key]}
        return Config(**kwargs, sources=dict(origin))
    except ConfigError as exc:
        # The dataclasses name the dotted key; the source is whichever layer set it (or the
        # nearest enclosing key: "prices.ops-x.request" was set as part of "prices.ops-x").
        parts = (exc.key or "").split(".")
        sources = (origin.get(".".join(parts[:n])) for n in range(len(parts), 0, -1))
        raise ConfigError(exc.message, key=exc.key, source=next((s for s in sources if s), None)) from None


#: A config file is a few KB; anything bigger is the wrong file (or a device such as /dev/zero).
MAX_FILE_BYTES = 1 << 20


class _ConfigLoader(StrictLoader):
    """The loader manifests use too (`yaml_strict`): no anchors, aliases or repeated keys."""

    kind = "a config file"


def _read_file(path: str | os.PathLike[str]) -> Mapping[Any, Any]:
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError("is a directory: give the path of a YAML config file (every key: "
                          "configs/default.yaml)", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}; check the path and its permissions",
                          source=source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"is larger than {MAX_FILE_BYTES // (1 << 20)} MB: a config file is a few KB of YAML; "
                          "is this the right file?", source=source)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {line}): save it as UTF-8",
                          source=source) from None
    try:
        loader = _ConfigLoader(text)  # checks every character already
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except Refused as exc:
        raise ConfigError(str(exc), source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {yaml_problem(exc, 'the config file')}", source=source) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"the top level must be a mapping of keys to values, got {shown(data)}", source=source)
    return data


def load_config(
    path: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the YAML file, then `PIPELINE_*` environment variables, then flags.

    `path` may also be a mapping of the file's keys (the Python API's `config={...}`): it is
    checked exactly as a file's content, in the file's place in the precedence.

    `overrides` holds flag values by config key (those of `FLAG_KEYS`, `max_duration` as seconds
    or a duration string, or any other key); None means "not given". Raises `ConfigError` naming
    the key and the flag, variable or file the bad value came from.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if isinstance(path, Mapping):
        _merge(merged, origin, path, "config mapping", from_file=True)
    elif path is not None:
        _merge(merged, origin, _read_file(path), str(path), from_file=True)
    env = os.environ if env is None else env
    for var, key in ENV_KEYS.items():
        if var in env and not (key in ENV_ONLY_KEYS and not env[var].strip()):  # `PIPELINE_TIME_SCALE=`: unset
            value = parse_env(var, key, env[var], getattr(_DEFAULTS, key))
            _merge(merged, origin, {key: value}, var, from_file=False)
    for key, value in (overrides or {}).items():
        if value is not None:
            _merge(merged, origin, {key: value}, flag_of(key) if key in FLAG_KEYS else "command line",
                   from_file=False)
    return _construct(merged, origin)
