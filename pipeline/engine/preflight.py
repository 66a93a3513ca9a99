"""Checks a run makes before it creates anything: every file it writes (results, rejects and
summary files, the state dir, the metrics textfile) may be written (`check_paths`, by the one
rule `state.paths.check_targets`): no option overwrites what it was not made for."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped, shown
from ..core.errors import UsageError
from ..core.results import RunFiles
from ..state.checkpoint import Checkpoint
from ..state.lock import LOCK_NAME
from ..state.paths import Kind, Target, check_targets, first_json_line_keys, json_object_keys, shown_path

__all__ = ["REJECT_KEYS", "SUMMARY_KEYS", "check_force_analyses", "check_paths"]

#: The keys of a rejects file's lines (`Rejected.to_dict`) and keys every summary has
#: (`report.summarize`): how a run knows those files as its own before rewriting them.
REJECT_KEYS = frozenset({"line", "id", "reason"})
SUMMARY_KEYS = frozenset({"outcome", "capabilities"})


def check_paths(manifest: str, files: RunFiles | Path, *, config_file: Path | None = None,
                metrics_file: Path | None = None) -> None:
    """Refuse, before anything is created, a run whose files would overwrite what they were not
    made for (`paths.check_targets`): the results file, its rejects and summary files, the state
    dir and the metrics textfile, against the manifest, the config file and each other."""
    if isinstance(files, Path):
        files = RunFiles.for_results(files)
    state_dir = files.state_dir
    targets = [
        Target("--out", files.results, parents=True, ours=lambda path: _results_ours(path, state_dir)),
        Target("--out's rejects file", files.rejects, parents=True, ours=_rejects_ours),
        Target("--out's summary file", files.summary, parents=True, ours=_summary_ours),
        Target("the state dir (--state-dir, else --out + .state)", state_dir, Kind.DIR, parents=True,
               ours=_state_dir_ours),
    ]
    if metrics_file is not None:
        from ..observe.metrics import textfile_ours  # the metrics module is imported only by runs that use it

        targets.append(Target("--metrics-file (config metrics_file)", metrics_file, ours=textfile_ours))
    inputs = {"the manifest itself": None if manifest == "-" else Path(manifest),
              "the config file (--config)": config_file}
    check_targets(targets, inputs=inputs, state_dirs=[state_dir])


def _results_ours(path: Path, state_dir: Path) -> str | None:
    # Whether the state dir's run wrote it is `check_identity`'s to say, under the lock; without a
    # checkpoint no run can have, and the refusal must come before the state dir is created.
    if (state_dir / Checkpoint.DB_NAME).exists():
        return None
    return (f"already exists and was not written by this run (the state dir {shown_path(state_dir)} is new): move "
            "it away or pick another --out; to resume the run that wrote it, give that run's --state-dir")


def _rejects_ours(path: Path) -> str | None:
    if first_json_line_keys(path) == REJECT_KEYS:
        return None
    return ("already exists and is not a rejects file this pipeline wrote (rewritten by every run of --out): move it "
            "away or pick another --out")


def _summary_ours(path: Path) -> str | None:
    if (json_object_keys(path) or frozenset()) >= SUMMARY_KEYS:
        return None
    return ("already exists and is not a run summary this pipeline wrote (rewritten at the end of every run of "
            "--out): move it away or pick another --out")


def _state_dir_ours(path: Path) -> str | None:
    with os.scandir(path) as entries:
        names = {entry.name for entry in entries}
    if Checkpoint.DB_NAME in names or names <= {LOCK_NAME}:
        return None
    example = sorted(names - {LOCK_NAME})[0]
    return (f"holds files that are not a run's state (such as {clipped(example)}): give a new or empty directory, or "
            "the state dir of the run to resume")


#: Known analysis names an error message lists at most.
NAMES_SHOWN = 20


def check_force_analyses(names: Sequence[str], state_dir: Path, *, analyses_by_type: Mapping[str, Any],
                         analyses: Sequence[str] | None = None) -> None:
    """Refuse (exit 2, before anything is created) a `--force-analysis NAME` the run cannot have: not
    a capability, not an analysis of `analyses_by_type` or `--analyses`, and no key of the state dir's
    run. A new state dir is not checked: every unit is new there, so nothing is forced anyway."""
    if not names or not (state_dir / Checkpoint.DB_NAME).exists():
        return
    known = set(CAPABILITIES) | set(analyses or ())
    for entries in analyses_by_type.values():
        for entry in entries or ():
            given = entry.get("name") or entry.get("capability") if isinstance(entry, Mapping) else entry
            if isinstance(given, str):
                known.add(given)
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    ckpt = Checkpoint.open(state_dir, read_only=True)
    try:
        known |= ckpt.catalog.analysis_names()
    finally:
        ckpt.close()
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = [*sorted(known - set(CAPABILITIES)), *CAPABILITIES]
        more = f" and {len(listed) - NAMES_SHOWN} more" if len(listed) > NAMES_SHOWN else ""
        raise UsageError(f"--force-analysis {shown(unknown[0])}: this run has no analysis of that name; known: "
                         f"{', '.join(clipped(n, 64) for n in listed[:NAMES_SHOWN])}{more}")
