"""Which pacer a run uses: in-process (`memory`, the default) or shared through Redis.

The limits belong to the account, so processes that share one (several runs, N pods, an app)
share the budget through Redis when `limiter` is a `redis://` or `rediss://` URL.
"""

from __future__ import annotations

from ..config.load import Config
from ..core.capabilities import CAPABILITIES
from ..core.endpoint import build_base_url
from ..core.errors import ConfigError
from ..core.lanes import Lane
from .memory import PacerBackend, Pacers

__all__ = ["build_pacers", "check_limiter", "limiter_namespace"]

#: A process's heartbeat in the shared limiter: how often, how long it lives, and how often a
#: lost Redis is tried again (seconds at time scale 1).
HEARTBEAT_EVERY_S = 3.0
HEARTBEAT_TTL_S = 10.0
REDIS_RETRY_S = 1.0


def build_pacers(cfg: Config, api_key: str) -> PacerBackend:
    """The run's pacers (build them inside the running loop)."""
    groups = {cap.qps_group: cfg.effective_qps(name) for name, cap in CAPABILITIES.items()}
    # The service's own rule, for the pacer's guard: at most `limit` requests in any window
    # (one second, shortened by the emulator's time scale).
    windows = {cap.qps_group: (1.0 / cfg.time_scale, int(cfg.qps.get(name, cap.default_qps)))
               for name, cap in CAPABILITIES.items()}
    weights = {Lane.SUBMIT: cfg.submit_share, Lane.POLL: 1.0 - cfg.submit_share}
    if cfg.limiter == "memory":
        return Pacers(groups, polls_share=cfg.polls_share_qps, windows=windows, weights=weights)
    from .redis_pacer import RedisPacers  # the `redis` extra: only a shared limiter needs it

    scale = cfg.time_scale  # heartbeats follow the windows' time scale (the emulator's test facility)
    return RedisPacers(groups, polls_share=cfg.polls_share_qps, windows=windows, weights=weights,
                       url=cfg.limiter, namespace=limiter_namespace(cfg, api_key),
                       heartbeat_every=HEARTBEAT_EVERY_S / scale, heartbeat_ttl=HEARTBEAT_TTL_S / scale,
                       retry_every=REDIS_RETRY_S / scale)


def limiter_namespace(cfg: Config, api_key: str) -> str:
    """The shared limiter's key space: `limiter_namespace`, or a hash of endpoint + key (never the key)."""
    if cfg.limiter_namespace:
        return cfg.limiter_namespace
    from .redis_keys import default_namespace

    return default_namespace(build_base_url(cfg.endpoint or "", cfg.protocol, cfg.workspace), api_key)


async def check_limiter(cfg: Config) -> None:
    """Raise `ConfigError` (exit 2) when the configured shared limiter cannot be used."""
    if cfg.limiter == "memory":
        return
    try:
        from .redis_keys import check_redis
    except ImportError:
        raise ConfigError("the redis package is not installed: pip install 'opensearch-media-pipeline[redis]'",
                          key="limiter") from None
    reason = await check_redis(cfg.limiter)
    if reason is not None:
        raise ConfigError(reason, key="limiter")
