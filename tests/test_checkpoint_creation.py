"""A kill -9 while a run creates its state dir: the checkpoint appears whole or not at all, and
its identity (results file, manifest, unfinished stop) is bound in one transaction, so `status`
never calls a run killed at its first instant "completed"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import cli

from pipeline.state import schema as schema_module
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.meta import MetaKey


def status(state_dir: Path) -> tuple[int, dict[str, object]]:
    done = cli(["status", "--json", "--state-dir", str(state_dir)])
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def test_a_creation_cut_short_leaves_no_checkpoint_and_the_next_open_makes_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A creation that dies after the file exists but before its tables are whole leaves no
    checkpoint under its name (so nothing has to guess about it), and the next open creates it."""
    state_dir = tmp_path / "r.jsonl.state"

    def killed(conn: object) -> None:
        raise KeyboardInterrupt  # stands for the kill, after the schema's first statements ran

    monkeypatch.setattr(schema_module, "upgrade", killed)
    with pytest.raises(KeyboardInterrupt):
        Checkpoint.open(state_dir)
    assert not (state_dir / Checkpoint.DB_NAME).exists()
    monkeypatch.undo()
    ckpt = Checkpoint.open(state_dir)
    try:
        assert ckpt.counts() == {}
    finally:
        ckpt.close()
    assert not (state_dir / (Checkpoint.DB_NAME + ".new")).exists()


def test_binding_a_state_dir_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The results file, the manifest and the unfinished stop are written together: a failure
    between them leaves none, never a run that names its results file but no manifest."""
    ckpt = Checkpoint.open(tmp_path / "s")
    try:
        def broken(name: str) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(ckpt._manifests, "add", broken)
        with pytest.raises(KeyboardInterrupt):
            ckpt.bind({MetaKey.OUT: "/x/r.jsonl"}, "/x/m.jsonl", {"reason": "interrupted", "message": "m"})
        assert ckpt.get_meta(MetaKey.OUT) is None
        assert ckpt.last_stop() is None
    finally:
        ckpt.close()


def test_status_of_a_checkpoint_killed_before_it_was_bound_is_not_completed(tmp_path: Path) -> None:
    """A checkpoint with its tables but no identity is a run killed at its first instant:
    status says what a resume needs (exit 3), not "completed (exit 0)"."""
    state_dir = tmp_path / "r.jsonl.state"
    Checkpoint.open(state_dir).close()
    code, report = status(state_dir)
    assert code == 3, report
    assert report["outcome"] != "completed" and report["exit_code"] == 3
