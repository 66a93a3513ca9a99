"""Where an export goes: `--out FILE`, whole or not at all (a temporary file renamed over it),
refused when it names anything but an earlier export (`check_out`: the run's own files, its
manifests, the state dir, devices, directories, links, any other file), or stdout as UTF-8 bytes
whatever the locale (`to_stdout`: a reader that leaves early ends it quietly). Shared by the
JSON Lines export (`export`) and the Parquet one (`export_parquet`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from ..core.results import RunFiles
from ..state.checkpoint import Checkpoint
from ..state.paths import Target, check_targets, first_json_line_keys, shown_path
from .main import OutputError, quiet_stdout

__all__ = ["EXPORT_KEYS", "RESULT_KEYS", "VANISHED_KEYS", "ByteSink", "check_out", "to_file", "to_stdout"]

log = logging.getLogger("pipeline.export")

#: The keys of every line of an export (`export._encode`): how an earlier export is known before it is replaced.
EXPORT_KEYS = frozenset({"id", "status", "meta", "analyses"})
RESULT_KEYS = frozenset({"id", "analysis", "capability", "status"})
#: The keys of a vanished record of `export --changes`.
VANISHED_KEYS = frozenset({"id", "analysis", "vanished"})
WRITE_BUFFER = 256 * 1024


class ByteSink(Protocol):
    """Where the export's lines go (a binary file, stdout's byte layer)."""

    def write(self, data: bytes, /) -> object: ...


def to_file(out: Path, write: Callable[[ByteSink], tuple[int, int]]) -> tuple[int, int]:
    """Write `out` whole or not at all: a temporary file next to it, renamed over it at the end."""
    parent = out.parent if str(out.parent) else Path(".")
    tmp = parent / f".{out.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, unlike mkstemp's 0600
    try:
        with open(fd, "wb", buffering=WRITE_BUFFER) as f:
            counts = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return counts


def check_out(out: Path, state_dir: Path, *, run: tuple[Checkpoint, Path] | None = None,
              ours: Callable[[Path], str | None] | None = None) -> None:
    """Refuse an `--out` the export was not made for (`paths.check_targets`): a directory, a
    device, a symbolic link, a path whose directory is missing, anything in the state dir, an
    existing file that is not an earlier export (a config, a results file: only an export is
    replaced by an export); with `run` (its open checkpoint and results file), also the run's
    results, rejects and summary files and its manifests, even empty. `ours` tells an earlier
    export of the format being written (default: a JSONL one)."""
    inputs: dict[str, Path | None] = {}
    if run is not None:
        ckpt, results = run
        files = RunFiles.for_results(results)
        inputs = {"the run's results file": results, "the run's rejects file": files.rejects,
                  "the run's summary file": files.summary, "the run's HTML report": files.report}
        for n, manifest in enumerate(m for m in ckpt.manifests() if m != "-"):
            inputs[f"a manifest of the run ({shown_path(manifest)})" if n else "the run's manifest"] = Path(manifest)
    check_targets([Target("--out", out, ours=ours or _export_ours)], inputs=inputs, state_dirs=[state_dir])


def _export_ours(path: Path) -> str | None:
    keys = first_json_line_keys(path)
    if keys in (EXPORT_KEYS, VANISHED_KEYS):
        return None
    # A flat export's lines are result lines: told from a run's results file by the state dir
    # every run keeps next to its results (unless given elsewhere, then it is the run's own input).
    if keys is not None and keys >= RESULT_KEYS and not Path(f"{path}.state").exists():
        return None
    what = "not an export (its first line is not an item object with id, status, meta and analyses)"
    if keys is not None and keys >= RESULT_KEYS:
        what = "a run's results file (one line per item and analysis), not an export"
    return (f"already exists and is {what}: move it away or give --out a path of its own; an export replaces "
            "only an earlier export")


def to_stdout(write: Callable[[ByteSink], tuple[int, int]]) -> tuple[int, int] | None:
    """Write to stdout as UTF-8 bytes (JSON Lines), whatever the locale's encoding; None when
    the reader closed the pipe before the end (`export ... | head`: said only at -v); an
    `OutputError` when stdout cannot be written (a full disk)."""
    stream = sys.stdout
    stream.flush()
    binary: IO[bytes] | None = getattr(stream, "buffer", None)
    try:
        if binary is not None:
            counts = write(binary)
            binary.flush()
        else:  # a replaced sys.stdout without a byte layer
            counts = write(_TextSink(stream))
            stream.flush()
    except BrokenPipeError:
        quiet_stdout()
        log.debug("stdout was closed by its reader; the export stopped there")
        return None
    except OSError as exc:
        quiet_stdout()
        raise OutputError.of(exc) from None
    return counts


class _TextSink:
    """Bytes in, text out: for a sys.stdout that has no `buffer`."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, data: bytes, /) -> int:
        return self._stream.write(data.decode("utf-8"))
