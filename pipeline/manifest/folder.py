"""A local directory as a catalog: walked depth first, streamed, in one deterministic order.

::

    selection = Selection(analyses_by_type={"image": ["image_analyze"]}, exclude=["tmp/"])
    counts = selection.new_counts()
    for entry in walk_folder("/data/media", selection, counts=counts):   # Listed | Rejected
        ...  # entry.record -> validate_record; entry.stamp -> the fingerprint
    counts.complete, counts.unreadable, counts.unmatched_patterns()

* Order: ids in code point order (UTF-8 byte order, as OSS lists keys), the same on every run
  and every machine: each directory's entries are sorted with a directory counting as its
  name followed by ``/``, so ``a.jpg`` comes before ``a/b.jpg`` as the strings do.
* Streaming: one ``os.scandir`` per directory, read and sorted when the walk enters it, never
  the whole tree. Memory is bounded by the directories on the current path: the sum of their
  widths (entries), so at most depth × the widest directory; a flat folder of N files holds N
  entries at once.
* Hidden files and directories (names starting with ``.``) are skipped, a directory with
  everything under it. Symbolic links are skipped (counted) unless `follow_symlinks`; then a
  link to a file is listed under the link's own path, a link to a directory is walked, a link
  back to a directory above it (a loop) is skipped with a warning, and a dangling link (its
  target cannot be stat()ed: a failed mount) is treated as an unreadable subtree: warned, counted,
  and its id named in `ListingCounts.unreadable`. Devices, pipes and sockets are counted and skipped.
* The id is the path relative to the directory with ``/`` separators; the source (``path``) is
  the absolute path through the directory as given (links in it are not resolved).
* A subtree that cannot be read (permissions) is skipped with one warning and named in
  `ListingCounts.unreadable`; a file gone between its directory's listing and its stat is
  counted (`vanished`), not listed; one there but that cannot be stat()ed (permissions) comes
  out as a `Rejected` with its id, so that it is not taken for removed. A file name that is not
  UTF-8 (no result file could hold its id) comes out as a `Rejected` saying to rename it.
* A directory that does not exist, or is a file, raises `ManifestError` (exit 2) at the call.

Each yielded file is stat()ed once (size and mtime for the fingerprint); none is opened.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator

from ..core.echo import clipped
from ..core.errors import ManifestError
from .formats import Rejected
from .listed import Listed, ListingCounts, Selection, SourceStamp

__all__ = ["walk_folder"]

log = logging.getLogger("pipeline.listing")


def walk_folder(directory: str | os.PathLike[str], selection: Selection, *, follow_symlinks: bool = False,
                counts: ListingCounts | None = None) -> Iterator[Listed | Rejected]:
    """The files under `directory` that `selection` admits, as `Listed` items (see the module
    docstring); `counts` (default: a fresh one, then unreachable) is filled in as the walk goes.
    Raises `ManifestError` now, before the first item, when `directory` is missing or not one."""
    root = os.path.abspath(os.fspath(directory))
    given = clipped(os.fspath(directory))
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise ManifestError(f"{clipped(root)} is a file, not a directory: give the directory to walk, or name "
                                "a manifest (.jsonl, .csv, .yaml, .txt) to read it as one", source=given)
        raise ManifestError(f"directory {clipped(root)} does not exist: check the path", source=given)
    try:
        with os.scandir(root) as found:
            top = sorted(found, key=_order, reverse=True)
    except OSError as exc:
        raise ManifestError(f"cannot read directory {clipped(root)} ({exc.strerror or exc}): check its permissions",
                            source=given) from None
    return _walk(root, top, selection, follow_symlinks, counts if counts is not None else selection.new_counts())


def _walk(root: str, top: list[os.DirEntry[str]], selection: Selection, follow: bool,
          counts: ListingCounts) -> Iterator[Listed | Rejected]:
    line = 0
    # Each level: its relative prefix, the rest of its entries (in reverse walk order, so each is
    # popped and released once walked: a DirEntry keeps the stat result it fetched), and the
    # directory's identity (device, inode), so that a followed link back to an ancestor is seen as a loop.
    stack: list[tuple[str, list[os.DirEntry[str]], tuple[int, int]]] = [("", top, _identity(root))]
    while stack:
        prefix, entries, _ = stack[-1]
        if not entries:
            stack.pop()
            continue
        entry = entries.pop()
        if entry.name.startswith("."):
            counts.hidden += 1
            continue
        rel = prefix + entry.name
        kind = _kind(entry, rel, follow, counts)
        if kind == "dir":
            ident = _identity(entry.path)
            if ident[0] >= 0 and ident in {level[2] for level in stack}:
                counts.loops += 1
                log.warning("%s: a symbolic link back to a directory above it: not walked again", clipped(entry.path))
                continue
            inner = _scan(entry.path, rel + "/", counts)
            if inner is not None:
                stack.append((rel + "/", inner, ident))
            continue
        if kind != "file":
            continue
        admitted = selection.admit(rel, counts)
        if admitted is None:
            continue
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            line += 1
            shown_name = rel.encode("utf-8", "backslashreplace").decode("utf-8")
            yield Rejected(line, f"file name {clipped(shown_name)} is not valid UTF-8, so no result could name it: "
                                 "rename it (e.g. convmv -f latin1 -t utf8)", shown_name)
            continue
        try:
            info = entry.stat(follow_symlinks=follow)
        except FileNotFoundError:
            counts.vanished += 1
            continue
        except OSError as exc:  # there, but not readable now: rejected (its last result stays current)
            line += 1
            yield Rejected(line, f"cannot stat {clipped(entry.path)} ({exc.strerror or exc}): fix its permissions; "
                                 "its last result stays current meanwhile", rel)
            continue
        line += 1
        counts.yielded += 1
        media, analyses = admitted
        yield Listed(line, {"id": rel, "path": entry.path, "analyses": analyses},
                     SourceStamp(entry.path, info.st_size, mtime_ns=info.st_mtime_ns), media)
    counts.complete = True


def _kind(entry: os.DirEntry[str], rel: str, follow: bool, counts: ListingCounts) -> str | None:
    """"dir", "file", or None (skipped, and counted why)."""
    try:
        if entry.is_symlink():
            if not follow:
                counts.symlinks += 1
                return None
            try:
                os.stat(entry.path)
            except OSError as exc:
                _dangling(entry.path, rel, exc, counts)
                return None
        if entry.is_dir(follow_symlinks=follow):
            return "dir"
        if entry.is_file(follow_symlinks=follow):
            return "file"
    except FileNotFoundError:
        counts.vanished += 1
        return None
    except OSError:
        pass
    counts.special += 1
    return None


def _dangling(path: str, rel: str, exc: OSError, counts: ListingCounts) -> None:
    """A followed link whose target cannot be stat()ed: a failed mount or a moved target looks just
    like this, so what is behind it (a file or a whole subtree) is unseen, not removed: counted,
    warned, and named in `unreadable` (so the run marks nothing vanished). A link itself gone since
    its directory was listed is only `vanished`."""
    if not os.path.lexists(path):
        counts.vanished += 1
        return
    counts.broken_links += 1
    counts.unreadable.append(rel)
    try:
        target = clipped(os.readlink(path))
    except OSError:
        target = "?"
    # Named by its id (short, as the summary's `unreadable` names it): a clipped absolute path may lose the name.
    log.warning("symbolic link %s -> %s: its target cannot be reached (%s): skipped with whatever is behind it, "
                "and nothing is marked vanished on this run; mount or restore its target, or remove the link",
                clipped(rel), target, exc.strerror or exc)


def _scan(path: str, rel: str, counts: ListingCounts) -> list[os.DirEntry[str]] | None:
    """The directory's entries in reverse walk order (the walk pops them), or None when it cannot be
    read (warned, counted)."""
    try:
        with os.scandir(path) as found:
            entries = list(found)
    except FileNotFoundError:  # removed since its parent was listed
        counts.vanished += 1
        return None
    except OSError as exc:
        counts.unreadable.append(rel)
        log.warning("%s: cannot read this directory (%s): skipped with everything under it; fix its permissions "
                    "to include it", clipped(path), exc.strerror or exc)
        return None
    entries.sort(key=_order, reverse=True)
    return entries


def _order(entry: os.DirEntry[str]) -> str:
    """The sort key that makes a depth-first walk list ids in string order: a directory is its
    name and a ``/`` (so ``a.jpg`` < ``a/``, as ``a.jpg`` < ``a/b.jpg``)."""
    try:
        is_dir = entry.is_dir()  # a link to a directory sorts as one too: the order must not depend on following
    except OSError:
        is_dir = False
    return entry.name + "/" if is_dir else entry.name


def _identity(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else (-1, -1)


