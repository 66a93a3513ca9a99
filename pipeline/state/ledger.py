"""The spend ledger's storage: the `spend` table, and what the done keys teach about costs.

One row per (item, analysis) key: `reserved`, the pessimistic cost held for it from before its
submission until its line is written, and `settled`, what its line says it cost (written in
the same transaction as its "done", by `Checkpoint.mark_done`). The policy (how much to
reserve, when to stop) is `engine.spend.SpendLedger`'s; this is only the storage. Settled and
reserved are kept as running totals once read, so the cap check on every submission costs no
sum over the table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..core.results import ItemStatus
from .db import transaction
from .jobs import JobState

__all__ = ["LedgerStore", "StaleReservation"]

#: (key, its jobs row's state or None, service id, status, usage JSON) of a reservation.
StaleReservation = tuple[str, "JobState | None", "str | None", "str | None", "str | None", float]
#: One unit's cost in a `usage` JSON column: price * the unit's number (0 when absent or not a number).
_PRICED_UNIT = "? * (CASE WHEN json_type(usage, ?) IN ('integer', 'real') THEN json_extract(usage, ?) ELSE 0 END)"


class LedgerStore:
    """Reservations and settlements, per key."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._totals: list[float] | None = None  # [settled, reserved], read lazily, then kept

    def reserve(self, key: str, amount: float, cap: float | None, *, settled: float | None = None) -> bool:
        """Reserve `amount` for submitting `key` unless settled + reserved would pass `cap`
        (None: no cap, reserve anyway). Replaces an earlier reservation of the same key.
        `settled`: what the run's done lines cost, when the caller knows it (sessions without a
        cap settle nothing here); else this table's settlements."""
        with self._transaction():
            own = self.reserved_of(key)
            if cap is not None:
                table_settled, reserved = self.spend()
                settled = table_settled if settled is None else settled
                if settled + reserved - own + amount > cap + 1e-9:
                    return False
            self._conn.execute(
                "INSERT INTO spend (id, reserved) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET reserved = "
                "excluded.reserved", (key, amount))
            self._adjust_totals(reserved=amount - own)
        return True

    def reserved_of(self, key: str) -> float:
        """What is reserved for `key` now (0 when nothing is)."""
        row = self._conn.execute("SELECT reserved FROM spend WHERE id = ?", (key,)).fetchone()
        return float(row[0]) if row else 0.0

    def spend(self) -> tuple[float, float]:
        """(settled, reserved) over the whole run: kept as running totals (a sum over the
        table on every submission would cost O(items) each time)."""
        if self._totals is None:
            row = self._conn.execute(
                "SELECT COALESCE(SUM(settled), 0), COALESCE(SUM(reserved), 0) FROM spend").fetchone()
            self._totals = [float(row[0]), float(row[1])]
        reserved = self._totals[1]
        return self._totals[0], reserved if reserved > 1e-12 else 0.0  # not -0.0000 from float sums

    def settle(self, costs: Iterable[tuple[str, float]]) -> None:
        """(key, cost) pairs: each key's reservation is released and what it cost is added to what
        the key settled before: a changed key's new line is paid on top of its superseded one."""
        costs = list(costs)
        if not costs:
            return
        with self._transaction():
            if self._totals is not None:
                keys = [key for key, _ in costs]
                marks = ",".join("?" * len(keys))
                row = self._conn.execute(
                    f"SELECT COALESCE(SUM(reserved), 0) FROM spend WHERE id IN ({marks})", keys).fetchone()
                self._adjust_totals(settled=sum(c for _, c in costs), reserved=-float(row[0]))
            self._conn.executemany(
                "INSERT INTO spend (id, reserved, settled) VALUES (?, 0, ?) "
                "ON CONFLICT (id) DO UPDATE SET reserved = 0, settled = spend.settled + excluded.settled", costs)

    def stale_reservations(self) -> list[StaleReservation]:
        """Reservations no accepted task stands behind: submits a session never sent (it stopped,
        or was killed, while they waited), or lines written just before a kill -9 and marked done
        when the next session reconciled the results file (with no cost). Recorded tasks keep theirs."""
        rows = self._conn.execute(
            "SELECT s.id, j.state, j.service_id, j.status, j.usage, s.reserved FROM spend AS s LEFT JOIN jobs AS j "
            "ON j.id = s.id WHERE s.reserved > 0 AND COALESCE(j.state, '') != ?", (JobState.SUBMITTED,))
        return [(key, None if state is None else JobState(state), service_id, status, usage, float(reserved))
                for key, state, service_id, status, usage, reserved in rows]

    def clear_reservations(self, *, settle: Iterable[tuple[str, float]], release: Iterable[str]) -> None:
        """In one transaction: settle done keys at their cost, and drop the reservations of `release`."""
        with self._transaction():
            self.settle(settle)
            self._conn.executemany("UPDATE spend SET reserved = 0 WHERE id = ?", [(key,) for key in release])
        self.forget_totals()  # re-read: cheaper than tracking each change

    def highest_costs(self, prices: Mapping[str, Mapping[str, float]]) -> dict[tuple[str, str], float]:
        """The highest cost, by today's `prices`, of one successful done key per (capability,
        service id) priced per unit: what comparable items really cost so far."""
        out: dict[tuple[str, str], float] = {}
        for service_id, table in prices.items():
            units = [unit for unit, price in table.items() if unit != "request" and price]
            if not units:
                continue
            terms = " + ".join([_PRICED_UNIT] * len(units))
            params: list[Any] = []
            for unit in units:  # a price, then the unit's JSON path twice; never spliced into the SQL
                path = f"$.{json.dumps(unit)}"
                params += [table[unit], path, path]
            try:
                rows = self._conn.execute(
                    f"SELECT capability, MAX({terms}) FROM jobs WHERE state = ? AND status = ? "
                    "AND service_id = ? AND usage IS NOT NULL GROUP BY capability",
                    [*params, JobState.DONE, ItemStatus.SUCCESS, service_id])
                for capability, most in rows:
                    out[(capability, service_id)] = table.get("request", 0.0) + float(most or 0.0)
            except sqlite3.OperationalError:  # an SQLite without JSON functions: learn from this run only
                return {}
        return out

    def forget_totals(self) -> None:
        """Read the totals from the table again next time: a transaction that counted changes in
        them was rolled back (or they changed too much to track)."""
        self._totals = None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with transaction(self._conn):
                yield
        except BaseException:
            self.forget_totals()  # the rollback undid what the kept totals counted
            raise

    def _adjust_totals(self, *, settled: float = 0.0, reserved: float = 0.0) -> None:
        if self._totals is not None:
            self._totals[0] += settled
            self._totals[1] += reserved
