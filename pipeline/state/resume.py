"""Preparing a state dir for a run: whose it is, what the results file holds, what is left.

Runs before the run writes anything (after it holds the state-dir lock, and after
`engine.preflight.check_paths` has found every file the run writes may be written):
- `check_identity`: a state dir belongs to one results file and one manifest (several with
  `--append`); a new state dir never adopts a results file it did not create.
- `reconcile`: the checkpoint and the results file agree after any crash (lines written past the
  recorded size are marked done; a torn last line is cut; a file cut short is noticed and its
  lost items' recorded tasks are polled again, not resubmitted).
- `reopen_failed`: `--retry-failed` puts failed items back in play and removes their lines.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.echo import clipped
from ..core.errors import StateError, UsageError
from ..core.outcome import UNFINISHED
from ..core.results import ResultLine
from .checkpoint import Checkpoint, JobState, MetaKey, Outcome, PendingTask
from .sink import outcome_of

__all__ = ["STREAM_SOURCE", "ResumeState", "check_identity", "drop_lines", "index_lines", "prepare", "read_line",
           "reconcile"]

log = logging.getLogger("pipeline.run")

#: Service rejections that another try cannot fix: `--retry-failed` leaves them alone.
NOT_RETRIED_CODES = ("InvalidParameter",)
@dataclass
class ResumeState:
    """What a run starts from: how many keys (item id, analysis) are done, and unfinished ones the
    checkpoint knows, by key. `scattered`: this start put keys back in play wherever their lines
    are (`--retry-failed`, a results file cut short), so the source is read from its start."""

    done: int
    pending: dict[str, PendingTask] = field(default_factory=dict)
    scattered: bool = False


#: What to do about a results file that is gone: the cheap way first.
LOST_RESULTS_ADVICE = ("restore the file; or create it empty (`: > FILE`), and a run polls again the recorded "
                       "tasks of the lost lines and sends again only the synchronous calls; or start over with a "
                       "new --state-dir (everything is paid again)")

#: How the checkpoint names the items of `pipeline.stream` (never a path: it is not resolved).
STREAM_SOURCE = "<pipeline.stream>"


def manifest_key(manifest: str) -> str:
    """How the checkpoint names a manifest (or a listed source): its resolved path, `-` for
    stdin, an ``oss://`` source as written, `STREAM_SOURCE` for items from Python."""
    if manifest in ("-", STREAM_SOURCE) or manifest.startswith("oss://"):
        return manifest
    return str(Path(manifest).resolve())


def check_identity(ckpt: Checkpoint, *, out: Path, manifest: str, append: bool, state_dir: Path,
                   shard: str | None = None, service: str | None = None) -> bool:
    """Bind a new state dir to its results file, manifest, shard and service (the base URL of
    `--endpoint` and `--workspace`), or check a resumed one. Returns whether the manifest joined
    the run now (`--append`): this session alone can tell which of its items an earlier manifest
    holds too."""
    joined = _check_identity(ckpt, out=out, manifest=manifest, append=append, state_dir=state_dir, shard=shard,
                             service=service)
    if service is not None and ckpt.get_meta(MetaKey.SERVICE) != service:  # once nothing refused the run
        ckpt.set_meta(MetaKey.SERVICE, service)
    return joined


def _check_identity(ckpt: Checkpoint, *, out: Path, manifest: str, append: bool, state_dir: Path,
                    shard: str | None, service: str | None) -> bool:
    out_name = str(out.resolve())
    recorded_out = ckpt.get_meta(MetaKey.OUT)
    recorded_shard = ckpt.get_meta(MetaKey.SHARD)
    if recorded_out is not None and (recorded_shard or None) != shard:
        raise UsageError(f"state dir {state_dir} holds shard {recorded_shard or '(none)'} of a run, not "
                         f"{shard or '(no --shard)'}: give the same --shard to resume it")
    if recorded_out is None:
        if out.exists() and out.stat().st_size > 0:
            raise StateError(
                f"results file {out} already exists and was not written by this run (the state dir "
                f"{state_dir} is new): move it away or pick another --out; to resume the run that wrote it, "
                "give that run's --state-dir")
        identity: dict[str, str] = {MetaKey.OUT: out_name, MetaKey.CREATED_AT: str(time.time())}
        if shard:
            identity[MetaKey.SHARD] = shard
        ckpt.bind(identity, manifest_key(manifest), UNFINISHED.to_record())
        return False
    if recorded_out != out_name:
        raise UsageError(
            f"state dir {state_dir} belongs to a run writing {recorded_out}, not {out_name}: "
            "give the same --out to resume it, or a new --state-dir for a new run")
    _check_service(ckpt, service, state_dir)
    name = manifest_key(manifest)
    known = ckpt.manifests()
    if name == "-" and name in known:
        # stdin has no name: what is piped in now may be another catalog, so it joins only when asked.
        if not append:
            raise UsageError(
                f"state dir {state_dir} holds a run read from stdin, and stdin cannot be told from another "
                "catalog: add --append to let what is piped in now join the run (ids already done are "
                "skipped: that is also how a run read from stdin resumes); or give a new --out for a "
                "separate run")
        log.info("--append: stdin joins the run again (ids already done are skipped)")
        return False
    if name in known:
        return False
    if not append and not known:
        raise UsageError(
            f"state dir {clipped(str(state_dir))} holds a run writing {clipped(recorded_out)} that names no "
            f"manifest: add --append to let {clipped(name)} join it (ids already done are skipped), or give a new "
            "--out for a separate run")
    if not append and STREAM_SOURCE in (name, known[0]):
        # A stream's items are whatever the caller sends: every later stream resumes its run (the
        # check above), but a run of a manifest and a stream are two catalogs unless asked.
        theirs = "items from Python (pipeline.stream)" if known[0] == STREAM_SOURCE else clipped(known[0])
        ours = "pipeline.stream()" if name == STREAM_SOURCE else clipped(name)
        raise UsageError(
            f"state dir {clipped(str(state_dir))} holds a run of {theirs}: {ours} joins it only with append=True "
            "(--append; ids already done are skipped), or give a new out for a separate run")
    if not append:
        raise UsageError(
            f"state dir {state_dir} holds a run of {known[-1]}, not {name}: run that manifest again to resume; "
            "add --append to add this manifest's items to the run (ids already done are skipped); "
            "or give a new --out for a separate run")
    ckpt.add_manifest(name)
    log.info("--append: %s joins the run (ids already done are skipped)", name)
    return True


def _check_service(ckpt: Checkpoint, service: str | None, state_dir: Path) -> None:
    """A run's task ids belong to the service that gave them (its endpoint and workspace): another
    one would not know them, and they would be submitted, and paid for, again. So a run whose
    recorded tasks came from another service is refused; one with no task outstanding (done
    lines are never sent again) goes on here, and records this service once nothing refused the
    run (`check_identity`). A state dir from before the service was recorded adopts this one."""
    if service is None:
        return
    recorded = ckpt.get_meta(MetaKey.SERVICE)
    if recorded is not None and recorded != service:
        tasks = sum(1 for task in ckpt.pending().values() if task.task_id)
        if tasks:
            raise UsageError(
                f"state dir {clipped(str(state_dir))} holds {tasks} tasks recorded at the service "
                f"{clipped(recorded)}, not {clipped(service)} (--endpoint, --workspace): task ids are known "
                "there only, so a resume here would submit, and pay for, them again. Give the same --endpoint "
                "and --workspace to resume the run, or a new --out for a separate run on this service")


def prepare(ckpt: Checkpoint, *, out: Path, retry_failed: bool) -> ResumeState:
    """Reconcile, apply `--retry-failed`, and read what is done and what is unfinished."""
    # A results file shorter than recorded puts keys anywhere in the catalog back in play.
    scattered = out.exists() and out.stat().st_size < ckpt.sink_offset()
    reconcile(out, ckpt)
    if ckpt.flag(MetaKey.NEEDS_LINE_INDEX):  # a state dir from before analyses
        index_lines(out, ckpt)
        ckpt.set_flag(MetaKey.NEEDS_LINE_INDEX, False)
    if retry_failed:
        scattered = True
        # The flag first: a crash between the two must not leave reopened items whose old
        # lines stay in the file (a later drop with no retry keys is a no-op).
        ckpt.set_flag(MetaKey.DROP_PENDING, True)
        reopened = ckpt.reopen_failed(skip_codes=NOT_RETRIED_CODES)
        log.info("--retry-failed: %d failed items will run again", len(reopened))
    if ckpt.flag(MetaKey.DROP_PENDING):
        dropped = drop_lines(out, ckpt.keys_in_state(JobState.RETRY), ckpt)
        ckpt.set_flag(MetaKey.DROP_PENDING, False)
        log.info("removed %d superseded result lines", dropped)
    return ResumeState(ckpt.count_done(), ckpt.pending(), scattered=scattered)


def reconcile(path: Path, ckpt: Checkpoint) -> int:
    """Bring the checkpoint and the results file into agreement after any crash.

    Returns how many lines were found written but not yet marked done.
    """
    offset = ckpt.sink_offset()
    if not path.exists():
        if offset > 0:
            raise StateError(
                f"results file {path} is missing, but the state dir records {offset} bytes of "
                f"results in it: {LOST_RESULTS_ADVICE}")
        return 0
    size = path.stat().st_size
    if size < offset:
        return _reconcile_short_file(path, ckpt, size, offset)
    if size == offset:
        return 0
    with open(path, "r+b") as f:
        f.seek(offset)
        tail = f.read()
        end = tail.rfind(b"\n") + 1  # 0 when there is no complete line
        outcomes = _parse(tail[:end], path, start=offset)
        if end < len(tail):  # a torn last line: the crash came mid-write
            f.truncate(offset + end)
    ckpt.mark_done(outcomes, offset + end)
    if outcomes:
        log.info("recovered %d result lines written just before an interruption", len(outcomes))
    return len(outcomes)


def _parse(raw: bytes, path: Path, *, start: int) -> list[Outcome]:
    outcomes = []
    position = start
    for line in raw.splitlines(keepends=True):
        if line.strip():
            where = f"{path} at byte {position}"
            outcomes.append(outcome_of(ResultLine.from_json(line, where=where), position))
        position += len(line)
    return outcomes


def _reconcile_short_file(path: Path, ckpt: Checkpoint, size: int, offset: int) -> int:
    """The file is shorter than recorded (cut short by hand, or a rewrite was interrupted):
    trust the file. Items whose lines are gone are polled again through their recorded task
    ids; only items with no task id (synchronous calls) are submitted again."""
    in_file: list[Outcome] = []
    good_end = 0
    with open(path, "r+b") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                f.truncate(good_end)
                break
            if raw.strip():
                in_file.append(outcome_of(ResultLine.from_json(raw, where=f"{path} at byte {good_end}"), good_end))
            good_end += len(raw)
    present = {o.key for o in in_file}
    missing = ckpt.keys_in_state(JobState.DONE) - present
    repoll, resubmit = ckpt.reset_to_pending(missing)
    ckpt.mark_done(in_file, good_end)
    if missing:
        log.warning("results file %s is shorter than the state dir records (%d of %d bytes): %d items' lines "
                    "are missing; %d recorded tasks will be polled again (not resubmitted), %d items without a "
                    "task id (synchronous calls) will be submitted again", path, size, offset, len(missing),
                    repoll, resubmit)
    return len(in_file)


def drop_lines(path: Path, keys: set[str], ckpt: Checkpoint) -> int:
    """Remove the lines of `keys` from the results file (for `--retry-failed`), atomically;
    the lines after the first removed one move, and the checkpoint learns where to."""
    if not path.exists() or not keys:
        return 0
    tmp = path.with_name(path.name + ".rewrite")
    dropped = 0
    moved: list[tuple[int, str]] = []
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for raw in src:
            if not raw.endswith(b"\n"):
                break  # torn tail: never copy half a line
            try:
                key: str | None = ResultLine.from_json(raw).key
            except StateError:
                key = None
            if key in keys:
                dropped += 1
                continue
            if dropped and key is not None:
                moved.append((dst.tell(), key))
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    ckpt.set_line_offsets(moved)
    ckpt.set_meta(MetaKey.SINK_OFFSET, str(path.stat().st_size))
    return dropped


def index_lines(path: Path, ckpt: Checkpoint) -> int:
    """Note where every line of the results file starts (a state dir from before analyses
    kept no offsets; `export --by-item` and chained analyses read lines by them)."""
    if not path.exists():
        return 0
    offsets: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        at = 0
        for raw in f:
            if raw.strip() and raw.endswith(b"\n"):
                offsets.append((at, ResultLine.from_json(raw, where=f"{path} at byte {at}").key))
            at += len(raw)
    ckpt.set_line_offsets(offsets)
    return len(offsets)


def read_line(path: Path, at: int) -> ResultLine:
    """The result line that starts at byte `at` of the results file."""
    with open(path, "rb") as f:
        f.seek(at)
        return ResultLine.from_json(f.readline(), where=f"{path} at byte {at}")
