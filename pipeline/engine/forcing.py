"""What `--force` / `--force-analysis` re-runs when a forced run is resumed. Pure.

A forced run interrupted (Ctrl-C, kill -9, a time limit) is resumed by the same command, which
forces again. Its keys whose current line a session of that same forced run wrote were re-done
already: forcing them again would pay twice for one `--force`. The checkpoint keeps the forced
run's first session (`CatalogStore.forced_from`) and each key's writer (`Known.written`).
"""

from __future__ import annotations

from ..state.catalog import Known
from ..state.jobs import JobState

__all__ = ["redone"]


def redone(known: Known | None, forced_from: int | None) -> bool:
    """Whether the key of `known` was re-done by the forced run begun at session `forced_from`
    (None: nothing forced), so a resume of that run does not force it again."""
    return (forced_from is not None and known is not None and known.state is JobState.DONE
            and known.written is not None and known.written >= forced_from)
