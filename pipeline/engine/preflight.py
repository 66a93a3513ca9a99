"""Checks a run makes before it creates anything: every file it writes (results, rejects and
summary files, the state dir, the metrics textfile) may be written (`check_paths`, by the one
rule `state.paths.check_targets`): no option overwrites what it was not made for."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped, shown
from ..core.errors import UsageError
from ..core.results import RunFiles
from ..state.checkpoint import Checkpoint
from ..state.lock import LOCK_NAME
from ..state.lock_results import results_lock_path
from ..state.paths import Kind, Target, check_targets, first_json_line_keys, json_object_keys, shown_path

__all__ = ["REJECT_KEYS", "SUMMARY_KEYS", "check_force_analyses", "check_paths", "option_of"]

#: The keys of a rejects file's lines (`Rejected.to_dict`) and keys every summary has
#: (`report.summarize`): how a run knows those files as its own before rewriting them.
REJECT_KEYS = frozenset({"line", "id", "reason"})
SUMMARY_KEYS = frozenset({"outcome", "capabilities"})
#: The keys every lock file's holder record has (`lock.StateDirLock`).
LOCK_KEYS = frozenset({"host", "pid", "started_at"})


def check_paths(manifest: str, files: RunFiles | Path, *, config_file: Path | None = None,
                metrics_file: Path | None = None, metrics_option: str = "--metrics-file") -> None:
    """Refuse, before anything is created, a run whose files would overwrite what they were not
    made for (`paths.check_targets`): the results file, its rejects and summary files, the state
    dir and the metrics textfile, against the manifest, the config file and each other.
    `metrics_option`: how messages name where the metrics file came from (the flag, or the
    config file's key)."""
    if isinstance(files, Path):
        files = RunFiles.for_results(files)
    state_dir = files.state_dir
    targets = [
        Target("--out", files.results, parents=True, ours=lambda path: _results_ours(path, state_dir)),
        Target("--out's rejects file", files.rejects, parents=True, ours=_rejects_ours),
        Target("--out's summary file", files.summary, parents=True,
               ours=lambda path: _summary_ours(path, files.results)),
        Target("--out's lock file", results_lock_path(files.results), parents=True, ours=_lock_ours),
        Target("the state dir (--state-dir, else --out + .state)", state_dir, Kind.DIR, parents=True,
               ours=_state_dir_ours),
    ]
    if metrics_file is not None:
        from ..observe.metrics import textfile_ours  # the metrics module is imported only by runs that use it

        targets.append(Target(metrics_option, metrics_file, ours=textfile_ours))
    inputs = {"the manifest itself": None if manifest == "-" else Path(manifest),
              "the config file (--config)": config_file}
    check_targets(targets, inputs=inputs, state_dirs=[state_dir])


def option_of(config: Config, key: str) -> str:
    """How a message names where config `key` came from: its flag (`--metrics-file`) or variable,
    `metrics_file in config file F`, or the bare key when it was set in code."""
    source = config.sources.get(key)
    if source is None or source == "command line":
        return key
    if source.startswith(("--", "PIPELINE_")):
        return source
    return f"{key} in config file {clipped(source, 240)}"


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


def _summary_ours(path: Path, results: Path) -> str | None:
    if (json_object_keys(path) or frozenset()) >= SUMMARY_KEYS:
        theirs = _summary_results(path)
        if theirs is None or Path(theirs).resolve() == results.resolve():
            return None
        if not Path(theirs).is_absolute() and Path(theirs).name == results.name:
            # Written by an earlier version, relative to a working directory not known now; next to
            # this --out and of its name, it is this run's summary (another stem's would differ).
            return None
        # `z.jsonl` and `z.out` share `z.summary.json` and `z.rejects.jsonl` (named from the stem):
        # the second run would overwrite the first's.
        return (f"is the summary of the run writing {clipped(theirs, 240)} (the summary and rejects files are named "
                "from --out without its extension): pick an --out with another name")
    return ("already exists and is not a run summary this pipeline wrote (rewritten at the end of every run of "
            "--out): move it away or pick another --out")


def _lock_ours(path: Path) -> str | None:
    if (json_object_keys(path) or frozenset()) >= LOCK_KEYS:
        return None
    return ("already exists and is not a lock file this pipeline wrote (a run of --out holds it while it runs): move "
            "it away or pick another --out")


def _state_dir_ours(path: Path) -> str | None:
    with os.scandir(path) as entries:
        names = {entry.name for entry in entries}
    if Checkpoint.DB_NAME in names or names <= {LOCK_NAME}:
        return None
    example = sorted(names - {LOCK_NAME})[0]
    return (f"holds files that are not a run's state (such as {clipped(example)}): give a new or empty directory, or "
            "the state dir of the run to resume")


def _summary_results(path: Path) -> str | None:
    """The results file a run summary names (its `results`), if it can be read."""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read(1 << 20)).get("results")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


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
