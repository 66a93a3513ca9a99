"""The state-dir lock on its own (it was tested only through whole runs): one holder at a time, a
refusal naming the holder, a release that is safe twice, and the read-only probe `status` uses."""

from __future__ import annotations

import os
import socket

import pytest

from pipeline.core.errors import StateLocked
from pipeline.state.lock import LOCK_NAME, StateDirLock, live_holder


def test_a_second_lock_is_refused_naming_the_holder(tmp_path) -> None:
    """While one lock holds the dir, another is refused (StateLocked, exit 7) with the holder's host
    and pid; once released, the dir can be taken again."""
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(StateLocked) as info:
            StateDirLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(info.value) and socket.gethostname() in str(info.value)
        assert "--out/--state-dir" in str(info.value)
    finally:
        first.release()
    again = StateDirLock(tmp_path)
    again.acquire()
    again.release()


def test_release_is_safe_twice_and_the_probe_follows_the_lock(tmp_path) -> None:
    """`live_holder` sees nobody before, the holder while held, nobody after; a second release is a no-op."""
    assert live_holder(tmp_path) is None  # no lock file yet
    lock = StateDirLock(tmp_path)
    lock.acquire()
    holder = live_holder(tmp_path)
    assert holder is not None and holder["pid"] == os.getpid() and isinstance(holder["started_at"], float)
    lock.release()
    lock.release()
    assert (tmp_path / LOCK_NAME).exists() and live_holder(tmp_path) is None
