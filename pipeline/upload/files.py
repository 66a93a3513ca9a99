"""Local files for the upload stage: checks, content hashes and content-addressed object keys.

Blocking by nature (they read files); the upload stage runs them in its worker threads.
A file is identified for the length of a run by its :class:`FileStamp` (device, inode, size,
mtime): when the stamp moves while the file is hashed or uploaded, the item fails with
:class:`FileChanged` instead of uploading bytes that do not match their key.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PermanentError

__all__ = [
    "HASH_CHUNK", "FileChanged", "FileError", "FileStamp", "check_unchanged", "distinct_contents", "hash_file",
    "object_key", "stamp_of",
]

HASH_CHUNK = 1024 * 1024  # bytes read at a time while hashing: memory stays flat for any size


class FileError(PermanentError):
    """A local file that cannot be uploaded (missing, a directory, unreadable, changed): this item fails."""

    default_code = "FileError"


class FileChanged(FileError):
    """The file changed size or modification time while it was being hashed or uploaded."""


@dataclass(frozen=True)
class FileStamp:
    """What identifies a file's content for one run, short of reading it."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def stamp_of(path: Path) -> FileStamp:
    """Stat ``path`` and check it is a readable regular file; raises :class:`FileError` otherwise."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise FileError(None, f"{path}: no such file") from exc
    except OSError as exc:
        raise FileError(None, f"{path}: cannot stat: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise FileError(None, f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileError(None, f"{path}: not a regular file (a device, pipe or socket cannot be uploaded)")
    return FileStamp(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def check_unchanged(path: Path, before: FileStamp, when: str) -> None:
    """Raise :class:`FileChanged` when ``path`` no longer has the stamp ``before``."""
    try:
        now = stamp_of(path)
    except FileError as exc:
        raise FileChanged(None, f"{path}: disappeared {when}: {exc.message}") from exc
    if now != before:
        what = f"size {before.size} -> {now.size}" if now.size != before.size else "modified"
        raise FileChanged(None, f"{path}: changed {when} ({what}); upload it again once it is complete")


def hash_file(path: Path) -> tuple[str, FileStamp]:
    """The SHA-256 (hex) of ``path``'s bytes, streamed in chunks, and its stamp.

    Raises :class:`FileError` for a file that cannot be read and :class:`FileChanged` when it
    changes while being read (the bytes read differ from its size, or its stamp moves).
    """
    before = stamp_of(path)
    digest = hashlib.sha256()
    read = 0
    try:
        with path.open("rb") as src:
            while chunk := src.read(HASH_CHUNK):
                digest.update(chunk)
                read += len(chunk)
    except PermissionError as exc:
        raise FileError(None, f"{path}: not readable (permission denied)") from exc
    except OSError as exc:
        raise FileError(None, f"{path}: read failed: {exc.strerror or exc}") from exc
    if read != before.size:
        raise FileChanged(None, f"{path}: changed while hashed ({before.size} bytes at start, {read} read)")
    check_unchanged(path, before, "while hashed")
    return digest.hexdigest(), before


def distinct_contents(paths: Iterable[Path]) -> tuple[int, int]:
    """(files, bytes) that uploading `paths` sends: objects are content-addressed, so identical
    bytes upload once whatever their names.

    Paths to one file (the same device and inode: repeated, relative and absolute, hard links)
    count once without reading it; files are read only when another distinct file has their
    size, since only then can their bytes be the same. A file that cannot be read or hashed
    counts as distinct (the run reports its problem)."""
    by_size: dict[int, dict[tuple[int, int], Path]] = {}
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        by_size.setdefault(info.st_size, {}).setdefault((info.st_dev, info.st_ino), path)
    files = total = 0
    for size, group in by_size.items():
        if len(group) == 1:
            distinct = 1
        else:
            digests: set[str] = set()
            unreadable = 0
            for path in group.values():
                try:
                    digests.add(hash_file(path)[0])
                except FileError:
                    unreadable += 1
            distinct = len(digests) + unreadable
        files += distinct
        total += distinct * size
    return files, total


def object_key(prefix: str, sha256: str, path: Path) -> str:
    """``{prefix}/{sha256}.{ext}``: the same bytes get the same key whatever the file's name.

    The extension is kept (lower case) because the services read a file's type from it; a
    file without one gets the bare hash.
    """
    ext = path.suffix.lower().lstrip(".")
    name = f"{sha256}.{ext}" if ext and ext.isalnum() else sha256
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name

