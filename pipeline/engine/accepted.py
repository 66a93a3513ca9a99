"""Group commit of accepted tasks' ids: the creates answered together are recorded together.

Invariant 2 (docs/design.md) asks that a task id be durable before the task is polled and
before the run may exit. A transaction per task kept it at about 50 µs of CPU each (one SQLite
commit with its running-totals triggers); `AcceptedTasks.record` keeps it at a fraction of that
by committing, in one transaction, every id that arrives while the event loop goes round once.

The first submitter with an id to record leads the batch: it lets the other ready tasks run
once (those whose create is answered add their id), then commits all of them and wakes them.
Every caller returns only after the commit that holds its id, so a handle is polled, and the run
exits, only with its task id durable. Neither the pause nor the wait can be cancelled (a stop
arriving then takes effect after the commit), so no id is left unrecorded by a stop. A kill -9
inside that one turn of the loop loses the ids of the creates answered in it, which the next
session sends again: the creates on the wire that a crash may double-bill, counted as such by
their spend reservations, made before each create as before.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from ..state.checkpoint import Accepted, Checkpoint

__all__ = ["AcceptedTasks"]


class _Batch:
    """The ids gathered for one commit, and its end (the time recorded, or what failed)."""

    def __init__(self) -> None:
        self.rows: list[Accepted] = []
        self.done = anyio.Event()
        self.at = 0.0
        self.error: BaseException | None = None


class AcceptedTasks:
    """See the module docstring; one per run, shared by every submitter."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._ckpt = checkpoint
        self._open: _Batch | None = None  # gathering ids: its leader commits them
        self.commits = 0  # transactions made (for tests and -v)

    async def record(self, accepted: Accepted) -> float:
        """Durably note `accepted` as submitted (with whatever else arrives in the same turn of
        the event loop); returns the time recorded. Raises what the commit raised."""
        batch = self._open
        if batch is not None:  # a leader is gathering: it commits this one too
            batch.rows.append(accepted)
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        else:
            batch = self._open = _Batch()
            batch.rows.append(accepted)
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()  # the other answered creates add their ids
            finally:
                self._open = None
                try:
                    batch.at = self._ckpt.record_accepted(batch.rows)
                    self.commits += 1
                except BaseException as exc:
                    batch.error = exc
                    raise
                finally:
                    batch.done.set()
        if batch.error is not None:
            raise batch.error
        return batch.at
