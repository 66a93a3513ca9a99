"""Which catalog a state dir belongs to: stdin has no name to tell one catalog from another."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.resume import check_identity


def test_stdin_joins_an_existing_run_only_with_append(tmp_path: Path) -> None:
    """A second `run -` on a state dir made from stdin is refused (exit 2, saying --append) like
    another manifest file: a different catalog piped in must not join the run unasked."""
    ckpt = Checkpoint.open(tmp_path / "state")
    out = tmp_path / "r.jsonl"
    try:
        assert check_identity(ckpt, out=out, manifest="-", append=False, state_dir=tmp_path) is False
        with pytest.raises(UsageError, match=r"(?s)stdin.*--append"):
            check_identity(ckpt, out=out, manifest="-", append=False, state_dir=tmp_path)
        check_identity(ckpt, out=out, manifest="-", append=True, state_dir=tmp_path)
        assert ckpt.manifests() == ["-"]  # stdin is listed once, however often it joined
    finally:
        ckpt.close()
