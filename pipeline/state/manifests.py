"""The `manifests` table: the manifests of a run, oldest first, and what the sessions that read
them counted (rejected lines, items, items an earlier manifest holds too, whether it was empty).

A run has one manifest, or several when `--append` joined more; the last one is the current
one. Before this table, the same facts were meta keys (`manifests`, or `manifest` alone before
`--append`, and `rejected:<name>`, `items:<name>`, `shared:<name>`, `empty:<name>`):
`adopt_legacy` moves them here on the first writable open (`schema.upgrade`), and until then a
read-only open (`status`, `export`) reads them where they are (`legacy_rows`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from .db import transaction

__all__ = ["LEGACY_COUNTS", "LEGACY_LISTS", "ManifestRow", "ManifestStore", "legacy_rows"]

#: Meta keys that listed a run's manifests before the table: newline-separated names, and the
#: single name a state dir from before `--append` kept.
LEGACY_LISTS = ("manifests", "manifest")
#: Prefixes of the meta keys that held a manifest's counts before the table (`<prefix>:<name>`).
LEGACY_COUNTS = ("rejected", "items", "shared", "empty")


@dataclass(frozen=True)
class ManifestRow:
    """One manifest of the run. `items` None: no session read it to its end yet (so `rejected`
    is a lower bound); `empty` None: not known yet."""

    name: str
    rejected: int = 0
    items: int | None = None
    shared: int = 0
    empty: bool | None = None


def legacy_rows(meta: Mapping[str, str]) -> list[ManifestRow]:
    """The manifests a state dir from before the table kept as meta keys, as rows (a name
    listed twice is one manifest)."""
    raw = meta.get("manifests") or meta.get("manifest") or ""
    rows = []
    for name in dict.fromkeys(m for m in raw.split("\n") if m):
        items, empty = meta.get(f"items:{name}"), meta.get(f"empty:{name}")
        rows.append(ManifestRow(name, rejected=int(meta.get(f"rejected:{name}") or 0),
                                items=None if items is None else int(items),
                                shared=int(meta.get(f"shared:{name}") or 0),
                                empty=None if empty is None else empty == "1"))
    return rows


class ManifestStore:
    """Reads and writes of the `manifests` table."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self) -> list[ManifestRow]:
        """Every manifest of the run, oldest first (a handful: read whole, summed here)."""
        try:
            found = self._conn.execute(
                "SELECT name, rejected, items, shared, empty FROM manifests ORDER BY position").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            # A read-only open of a state dir no run of this version has opened yet.
            return legacy_rows(dict(self._conn.execute("SELECT key, value FROM meta").fetchall()))
        return [ManifestRow(name, rejected, items, shared, None if empty is None else bool(empty))
                for name, rejected, items, shared, empty in found]

    def names(self) -> list[str]:
        return [row.name for row in self.rows()]

    def add(self, name: str) -> None:
        """`name` joins the run's manifests (last, so it is the current one); a name already
        there stays where it is."""
        self._conn.execute("INSERT OR IGNORE INTO manifests (name) VALUES (?)", (name,))

    def save_counts(self, name: str, *, rejected: int, items: int | None, shared: int | None = None) -> None:
        """A manifest's rejected lines and items, as a session that read it saw them. `items`
        None: the session stopped part-way, so its rejects are a lower bound (the larger count
        is kept). `shared`: of its items, those an earlier manifest of the run already holds
        (given by the session that joined it with `--append`, the only one that can tell them
        apart; the larger count is kept)."""
        with transaction(self._conn):
            if items is None:
                self._conn.execute("UPDATE manifests SET rejected = MAX(rejected, ?) WHERE name = ?",
                                   (rejected, name))
            else:
                self._conn.execute("UPDATE manifests SET rejected = ?, items = ? WHERE name = ?",
                                   (rejected, items, name))
            if shared is not None:
                self._conn.execute("UPDATE manifests SET shared = MAX(shared, ?) WHERE name = ?", (shared, name))

    def retire_joined(self, catalog: str) -> None:
        """A complete read of the run's catalog decided what vanished: every live unit is now one
        of the catalog's, so the manifests joined with --append count no items of their own (their
        units are the catalog's, or vanished; counted, they would stay "not started" forever)."""
        self._conn.execute("UPDATE manifests SET items = 0, shared = 0 WHERE name != ?", (catalog,))

    def set_empty(self, name: str, empty: bool) -> None:
        """Whether a manifest, read to its end, held no item at all (for any shard)."""
        self._conn.execute("UPDATE manifests SET empty = ? WHERE name = ?", (int(empty), name))

    def catalog_empty(self) -> bool:
        """Every manifest of the run was read to its end and held no item: nothing to succeed."""
        rows = self.rows()
        return bool(rows) and all(row.empty for row in rows)

    def rejected_lines(self) -> int:
        """Rejected lines over every manifest of the run (they count in its outcome)."""
        return sum(row.rejected for row in self.rows())

    def item_count(self) -> int | None:
        """Distinct valid (item, analysis) units over every manifest of the run (a unit repeated
        by an appended manifest counts once); None until each was read to its end."""
        rows = self.rows()
        if not rows or any(row.items is None for row in rows):
            return None
        return max(sum(row.items or 0 for row in rows) - sum(row.shared for row in rows), 0)

    def adopt_legacy(self) -> bool:
        """Move the manifests a state dir from before the table kept as meta keys into it, and
        drop those keys, in one transaction; False when there were none (the usual case: one
        look over the meta table's few rows). Names already in the table keep their row."""
        legacy = " OR ".join(["key IN (?, ?)", *(f"substr(key, 1, {len(p) + 1}) = ?" for p in LEGACY_COUNTS)])
        params = [*LEGACY_LISTS, *(f"{p}:" for p in LEGACY_COUNTS)]
        if self._conn.execute(f"SELECT 1 FROM meta WHERE {legacy} LIMIT 1", params).fetchone() is None:
            return False
        with transaction(self._conn):
            meta = dict(self._conn.execute(f"SELECT key, value FROM meta WHERE {legacy}", params).fetchall())
            self._conn.executemany(
                "INSERT OR IGNORE INTO manifests (name, rejected, items, shared, empty) VALUES (?, ?, ?, ?, ?)",
                [(row.name, row.rejected, row.items, row.shared, None if row.empty is None else int(row.empty))
                 for row in legacy_rows(meta)])
            self._conn.execute(f"DELETE FROM meta WHERE {legacy}", params)
        return True
