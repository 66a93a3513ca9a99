"""The state-dir lock on its own (it was tested only through whole runs): one holder at a time, a
refusal naming the holder, a release that is safe twice, and the read-only probe `status` uses."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from pipeline.core.errors import StateLocked, UsageError
from pipeline.state.checkpoint import Checkpoint, MetaKey
from pipeline.state.lock import LOCK_NAME, StateDirLock, live_holder
from pipeline.state.lock_results import ResultsLock, check_owner, check_results_free, results_lock_path


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


def test_a_results_file_has_one_live_run_whatever_its_state_dir(tmp_path) -> None:
    """Two runs on one --out with different state dirs: the second's ResultsLock is refused (exit 7)
    naming the holder's state dir; the probe refuses the same way and creates nothing."""
    results = tmp_path / "r.jsonl"
    check_results_free(results)  # nobody holds it
    assert not results_lock_path(results).exists()
    first = ResultsLock(results, tmp_path / "a.state")
    first.acquire()
    try:
        with pytest.raises(StateLocked, match=r"a\.state"):
            ResultsLock(results, tmp_path / "b.state").acquire()
        with pytest.raises(StateLocked, match=rf"pid {os.getpid()}"):
            check_results_free(results)
    finally:
        first.release()
    check_results_free(results)


def test_a_new_state_dir_is_refused_for_an_out_another_state_dir_has_work_for(tmp_path) -> None:
    """A run with work recorded in state dir A for r.jsonl (named by the results file's lock file, or
    the default r.jsonl.state): a new state dir B for r.jsonl is refused (exit 2) naming A; A
    itself, another --out, and an A without work are accepted."""
    results = tmp_path / "r.jsonl"
    for a in (tmp_path / "a.state", tmp_path / "r.jsonl.state"):
        ckpt = Checkpoint.open(a)
        try:
            ckpt.set_meta(MetaKey.OUT, str(results.resolve()))
            check_owner(results, tmp_path / "b.state", None)  # no work yet: nothing to pay twice
            ckpt.record_submitted("i\x1fimage_analyze", "image_analyze", "ops-image-analyze-ocr-001", "t-1",
                                  attempts=1)
        finally:
            ckpt.close()
        lock = ResultsLock(results, a)  # what a run on A leaves next to r.jsonl
        lock.acquire()
        lock.release()
        with pytest.raises(UsageError, match=rf"--state-dir {a}"):
            check_owner(results, tmp_path / "b.state", None)
        check_owner(results, a, None)
        check_owner(tmp_path / "other.jsonl", tmp_path / "b.state", None)
        shutil.rmtree(a)
        results_lock_path(results).unlink()
