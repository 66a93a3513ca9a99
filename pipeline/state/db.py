"""The one SQLite connection a checkpoint's stores share: how it is opened, and `transaction`.

Every store (`jobs`, `meta`, `manifests`, `uploads`, `ledger`) takes this connection; none
opens its own, so a write that spans stores (a batch of lines marked done, their costs settled
and the results file's size noted) is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["connect", "transaction"]

#: How long a statement waits for another connection's write lock (a `status` reading while
#: the run writes) before it fails.
BUSY_TIMEOUT_MS = 5000


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """Open the database at `path` in autocommit mode (transactions are explicit). Read-only
    opens never create or change anything; the writable one turns on WAL."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode survives process crashes (kill -9); only an OS crash or power loss
    # can drop the last transactions, which then replay as resubmits/re-polls.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction around the block, committed at its end and rolled back on any error.
    Inside another one it joins it: a store's own transaction becomes part of the caller's, so
    the stores compose without knowing who calls them."""
    if conn.in_transaction:
        yield
        return
    # IMMEDIATE: the write lock is taken now, so the transaction cannot fail half-way for want of it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
