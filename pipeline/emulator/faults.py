"""Deterministic fault draws: which request gets a 500, a drop, a delay, a 429 burst, a bad body.

Each draw uses its own ``random.Random`` seeded from a hash of the emulator seed, the route,
the request's identity (the sha256 of a create's body, or a poll's task id) and how many
times that identity has been seen. So the same run against the same seed meets the same
faults, whatever the interleaving of other requests; and a retried request draws afresh
(its occurrence number differs), so a rate below 1.0 never blocks an item forever.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from .settings import FaultSettings

#: Bytes of the sha256 digest that seed a draw's ``Random``: 64 bits, plenty for a seed.
SEED_BYTES = 8


def seeded_random(seed: int, *parts: object) -> random.Random:
    """A ``Random`` determined by ``seed`` and ``parts`` (stable across processes)."""
    text = "|".join(str(p) for p in (seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:SEED_BYTES], "big"))


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """What happens to one request; all False means it is served normally."""

    burst_429: bool = False
    drop: bool = False
    error_500: bool = False
    slow: bool = False
    bad_body: bool = False  # drawn last: adding it left the draws of the four before unchanged


NO_FAULT = FaultDraw()
#: One random number per FaultDraw field, always all of them (see ``FaultInjector.draw``).
DRAWS_PER_REQUEST = len(FaultDraw.__slots__)


class FaultInjector:
    """Holds the live fault settings, the active 429 bursts and the draw counts."""

    __slots__ = ("_bursts", "_seen", "seed", "settings")

    def __init__(self, seed: int, settings: FaultSettings) -> None:
        self.seed = seed  # emulator seed, part of every draw
        self.settings = settings  # live settings; replaced by the control endpoint
        self._bursts: dict[str, float] = {}  # capability -> clock time its 429 burst ends
        self._seen: Counter[tuple[str, str, str]] = Counter()  # (capability, kind, identity) -> n

    def burst_remaining(self, capability: str, now: float) -> float:
        """Real seconds left in the capability's 429 burst (0.0 when none is active)."""
        return max(self._bursts.get(capability, 0.0) - now, 0.0)

    def draw(self, capability: str, kind: str, identity: str, now: float, time_scale: float) -> FaultDraw:
        """Decide the faults for one request; starts a 429 burst when one is drawn."""
        settings = self.settings
        if not settings.applies_to(capability, kind):
            return NO_FAULT
        key = (capability, kind, identity)
        self._seen[key] += 1
        rng = seeded_random(self.seed, "fault", *key, self._seen[key])
        # Always draw all of them in this order, so changing one rate never shifts the others.
        burst, drop, error, slow, bad_body = (rng.random() for _ in range(DRAWS_PER_REQUEST))
        result = FaultDraw(
            burst_429=burst < settings.burst_429_rate,
            drop=drop < settings.drop_rate,
            error_500=error < settings.error_500_rate,
            slow=slow < settings.slow_rate,
            bad_body=bad_body < settings.bad_body_rate,
        )
        if result.burst_429:
            self._bursts[capability] = now + settings.burst_429_seconds / time_scale
        return result

    def task_fails(self, capability: str, submission: str, occurrence: int) -> bool:
        """Whether a newly created task is to end FAILED."""
        rate = self.settings.task_fail_rate
        if rate <= 0.0 or not self.settings.applies_to(capability, "create"):
            return False
        return seeded_random(self.seed, "task-fail", capability, submission, occurrence).random() < rate
