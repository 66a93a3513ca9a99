"""Where an option may write: one rule for every option that writes a file or a directory.

No option may overwrite a file it was not made for. Every writing option (`run --out` and the
rejects and summary files named after it, `run --state-dir`, `run --metrics-file`, `export
--out`, `demo --out-dir`) describes its path as a `Target`, and `check_targets` refuses it with
a `UsageError` (exit 2) before anything is created when the path:

- is a symbolic link (writing through it, or renaming over it, lands somewhere the command
  line does not say), or has a parent that is a regular file;
- exists and is not what the option writes: a directory, a device such as `/dev/null` or
  `/dev/full`, a pipe or a socket for a file; anything but a directory for a directory;
- is one of the command's inputs (the manifest, the config file, the run's own results file
  for `export`), or another target of the same command, or lies inside a run's state dir
  (a directory holding a checkpoint or a run lock, up to `STATE_DEPTH` levels up);
- has a missing parent directory, for options that do not create their directories;
- already holds something this option did not write: each option says what its own earlier
  output looks like (`Target.ours`), so a results file, a YAML config or another exporter's
  textfile is never replaced by a metrics file or an export, while the same command run again
  replaces its own output as documented.

Everything here only looks (`lstat`, reading at most `SNIFF_LIMIT` bytes of an existing
target); nothing is created, so a refused command leaves the file system as it found it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..core.echo import clipped
from ..core.errors import UsageError

__all__ = ["SNIFF_LIMIT", "STATE_MARKERS", "Kind", "Target", "check_targets", "first_json_line_keys",
           "json_object_keys", "shown_path"]

#: Names whose presence makes a directory a run's state dir (Checkpoint.DB_NAME, lock.LOCK_NAME;
#: written out, not imported, so this module stays free of SQLite and fcntl).
STATE_MARKERS = ("checkpoint.sqlite3", "run.lock")
#: How many directories up a target is looked at for a state dir (files live one level down
#: in `oss-upload/`, so two levels cover every file a run keeps there).
STATE_DEPTH = 2
#: The most bytes read from an existing target to tell whether this option wrote it.
SNIFF_LIMIT = 16 * 1024 * 1024
#: Paths in messages are cut to this many characters.
PATH_ECHO = 240


class Kind(str, Enum):
    """What an option writes at its path."""

    FILE = "file"
    DIR = "directory"


@dataclass(frozen=True)
class Target:
    """A path one option writes.

    `option` names it in messages ("--metrics-file", or "--out's rejects file" for a file
    named after --out); `parents`: the option creates missing parent directories itself;
    `ours`: for an existing, non-empty target, None when it is this option's own earlier
    output (it may be replaced or resumed), otherwise why not, in words that say how to go on.
    """

    option: str
    path: Path
    kind: Kind = Kind.FILE
    parents: bool = False
    ours: Callable[[Path], str | None] | None = None


def shown_path(path: Path | str) -> str:
    """A path as messages show it: unquoted, cut when very long."""
    return clipped(str(path), PATH_ECHO)


def check_targets(targets: Sequence[Target], *, inputs: Mapping[str, Path | None] | None = None,
                  state_dirs: Iterable[Path] = ()) -> None:
    """Refuse (`UsageError`, exit 2) the first target its option may not write; touches nothing.

    `inputs`: what the command reads or must keep, by how messages call it ("the manifest",
    "the config file (--config)"); `state_dirs`: state dirs whose whole content is off limits
    even when they do not exist yet (the run's own); every directory holding a checkpoint or a
    run lock is found by itself."""
    protected = {name: path for name, path in (inputs or {}).items() if path is not None}
    for i, target in enumerate(targets):
        for other in targets[i + 1:]:
            if _same(target.path, other.path):
                raise UsageError(f"{target.option} {shown_path(target.path)} is also {other.option}: give each "
                                 "its own path")
    # Where each target is first, what it holds second: a path that is wrong for its option is
    # named as such even when another target's content check would also fail. Directories'
    # content comes before files': a directory (the state dir) may be what vouches for a file.
    for target in targets:
        problem = _problem(target, protected, state_dirs)
        if problem:
            raise UsageError(f"{target.option} {shown_path(target.path)} {problem}")
    for target in sorted(targets, key=lambda t: t.kind is not Kind.DIR):
        problem = _not_ours(target)
        if problem:
            raise UsageError(f"{target.option} {shown_path(target.path)} {problem}")


# ---- the rule --------------------------------------------------------------------------------
def _problem(target: Target, protected: Mapping[str, Path], state_dirs: Iterable[Path]) -> str | None:
    path = target.path
    if not str(path).strip():
        return "is empty: give a path"
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        return _under_a_file(_file_above(path))
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror}): give another path"
    if st is not None and stat.S_ISLNK(st.st_mode):
        return (f"is a symbolic link (to {shown_path(os.readlink(path))}): give the path of the {target.kind.value} "
                "itself, so that nothing is written where the command line does not say")
    if st is not None and not _is_kind(st, target.kind):
        wanted = "regular file" if target.kind is Kind.FILE else "directory"
        return f"is {_describe(st)}, not a {wanted}: give the path of a {target.kind.value}"
    for name, other in protected.items():
        if _same(path, other):
            return f"is {name}: give the {target.kind.value} a path of its own"
    inside = _state_dir_holding(path, state_dirs)
    if inside is not None:
        return (f"is in the state dir {shown_path(inside)}: nothing but the run itself may write there; give a "
                "path outside it")
    for name, other in protected.items():
        if target.kind is Kind.DIR and _inside(other, path):
            return f"holds {name}: give a directory of its own"
    problem = _parent_problem(target)
    if problem:
        return problem
    if st is not None and target.kind is Kind.FILE and not os.access(path, os.W_OK):
        return "is not writable by this user"
    return None


def _not_ours(target: Target) -> str | None:
    """Why an existing, non-empty target is not this option's own output, or None."""
    try:
        st = os.lstat(target.path)
    except OSError:
        return None
    if target.ours is None or _empty(target.path, st):
        return None
    return target.ours(target.path)


def _is_kind(st: os.stat_result, kind: Kind) -> bool:
    return stat.S_ISREG(st.st_mode) if kind is Kind.FILE else stat.S_ISDIR(st.st_mode)


def _describe(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _empty(path: Path, st: os.stat_result) -> bool:
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as entries:
                return not any(entries)
        except OSError:
            return False
    return st.st_size == 0


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _same(a: Path, b: Path) -> bool:
    """The same file: the same path once resolved, or the same inode (a hard link)."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, directory: Path) -> bool:
    real, top = _real(path), _real(directory)
    return real != top and real.startswith(top.rstrip(os.sep) + os.sep)


def _state_dir_holding(path: Path, state_dirs: Iterable[Path]) -> Path | None:
    for directory in state_dirs:
        if _inside(path, directory):
            return directory
    above = Path(_real(path)).parent
    for _ in range(STATE_DEPTH):
        if any((above / marker).exists() for marker in STATE_MARKERS):
            return above
        if above == above.parent:
            break
        above = above.parent
    return None


def _under_a_file(above: Path) -> str:
    return f"cannot create files under {shown_path(above)}, which is not a directory; give another path"


def _file_above(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (a regular file, when lstat said ENOTDIR)."""
    above = path.parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    return above


def _parent_problem(target: Target) -> str | None:
    parent = target.path.parent if str(target.path.parent) else Path(".")
    if os.path.isdir(parent):
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot be written: this user cannot create files in {shown_path(parent)}"
        return None
    if os.path.lexists(parent):
        return _under_a_file(parent)
    if not target.parents:
        return f"cannot be written: the directory {shown_path(parent)} does not exist; create it first"
    existing = _file_above(target.path)
    if not os.path.isdir(existing):
        return _under_a_file(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written: this user cannot create directories in {shown_path(existing)}"
    return None


# ---- what an option's own output looks like (for `Target.ours`) ----------------------------
def first_json_line_keys(path: Path) -> frozenset[str] | None:
    """The keys of the JSON object on the first line of `path`, or None when it holds none
    (not JSON, not an object, or a first line longer than `SNIFF_LIMIT`)."""
    try:
        with open(path, "rb") as f:
            raw = f.readline(SNIFF_LIMIT)
    except OSError:
        return None
    return _keys(raw)


def json_object_keys(path: Path) -> frozenset[str] | None:
    """The keys of the JSON object `path` holds whole, or None (not one, or over `SNIFF_LIMIT`)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(SNIFF_LIMIT + 1)
    except OSError:
        return None
    return None if len(raw) > SNIFF_LIMIT else _keys(raw)


def _keys(raw: bytes) -> frozenset[str] | None:
    try:
        value: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return frozenset(value) if isinstance(value, dict) else None
