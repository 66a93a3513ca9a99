"""The running totals (issue 21): after every kind of change to what counts, they equal a scan of
every row, so the summary and `status` read a few rows per group instead of every key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.core.job import job_key
from pipeline.core.results import ItemStatus
from pipeline.state import totals
from pipeline.state.checkpoint import Checkpoint, Outcome

CAP, SVC = "image_analyze", "ops-image-analyze-001"


def _scan(conn: sqlite3.Connection) -> tuple[set[tuple[object, ...]], set[tuple[object, ...]]]:
    counts = set(conn.execute(
        "SELECT capability, service_id, status, error_code, COUNT(*) FROM jobs WHERE state = 'done' AND "
        "vanished IS NULL GROUP BY 1, 2, 3, 4"))
    usage = set(conn.execute(
        "SELECT j.capability, j.service_id, u.key, SUM(u.value) FROM jobs AS j, json_each(j.usage) AS u WHERE "
        "j.state = 'done' AND j.status = 'SUCCESS' AND j.vanished IS NULL AND u.type IN ('integer', 'real') "
        "GROUP BY 1, 2, 3"))
    return counts, usage


def _kept(conn: sqlite3.Connection) -> tuple[set[tuple[object, ...]], set[tuple[object, ...]]]:
    counts, usage = totals.read(conn)
    return set(counts), {(c, s, k, v) for c, s, k, v in usage if v}


def _outcome(i: int, status: ItemStatus = ItemStatus.SUCCESS, code: str | None = None) -> Outcome:
    return Outcome(job_key(f"i{i}", CAP), CAP, SVC, status, f"t{i}", code, {"units": 2, "label": "x"}, 1.0, 1, i)


def test_the_totals_follow_every_change_to_what_counts(tmp_path: Path) -> None:
    """Lines marked done (new and replacing), a key superseded, failures reopened, keys vanished
    and restored, and a state dir counted on its first open: the kept totals equal the scan."""
    ckpt = Checkpoint.open(tmp_path / "s")
    conn = ckpt._conn
    try:
        ckpt.mark_done([_outcome(i) for i in range(6)] + [_outcome(6, ItemStatus.FAILED, "Boom")], 100)
        assert _kept(conn) == _scan(conn) and ("image_analyze", SVC, "SUCCESS", None, 6) in _kept(conn)[0]
        ckpt.mark_done([_outcome(1, ItemStatus.FAILED, "Late")], 200)  # a line replacing another
        assert _kept(conn) == _scan(conn)
        ckpt.catalog.apply(seen=[], supersede=[("fp", "src", job_key("i2", CAP))], session=1)
        assert _kept(conn) == _scan(conn)
        ckpt.reopen_failed()
        assert _kept(conn) == _scan(conn)
        ckpt.catalog.apply(seen=[job_key("i3", CAP)], session=2)
        assert ckpt.catalog.vanish(2) > 0
        assert _kept(conn) == _scan(conn) == ({(CAP, SVC, "SUCCESS", None, 1)}, {(CAP, SVC, "units", 2)})
        ckpt.catalog.apply(seen=[], restore=[job_key("i0", CAP)], session=3)
        assert _kept(conn) == _scan(conn) == ({(CAP, SVC, "SUCCESS", None, 2)}, {(CAP, SVC, "units", 4)})
        conn.execute("DROP TABLE totals")
        conn.execute("DROP TRIGGER totals_delete")
    finally:
        ckpt.close()
    reopened = Checkpoint.open(tmp_path / "s")  # a state dir from before the totals: counted once
    try:
        assert _kept(reopened._conn) == _scan(reopened._conn)
    finally:
        reopened.close()
