"""`--include GLOB` / `--exclude GLOB`: which listed items a run takes, by their id. Pure.

A pattern is matched against the item's id: the path relative to the listed directory
(POSIX separators) or the whole object key. The rules are rclone's:

* ``*`` is any run of characters except ``/`` (it never crosses a directory); ``**`` is any
  run including ``/``; ``**/`` is zero or more whole directories; ``?`` is one character
  except ``/``; ``[abc]``, ``[a-z]`` and ``[!abc]`` (or ``[^abc]``) are character classes;
  ``{jpg,png}`` is either alternative; a backslash makes the next character literal.
* A pattern that starts with ``/`` is anchored at the top (``/2024/*.jpg`` matches
  ``2024/a.jpg`` only); any other matches at any depth, on whole path components
  (``*.jpg`` matches ``a.jpg`` and ``x/y/a.jpg``; ``raw/*.jpg`` matches ``2024/raw/a.jpg`` but
  not ``2024/xraw/a.jpg``). A pattern ending in ``/`` means everything under that directory.
* Matching is case-sensitive, as OSS keys are (``*.{jpg,JPG}`` takes both).

An item is kept when it matches at least one include (or none is given) and no exclude.
`decide` also says which patterns matched, so that a pattern that matched nothing can be
reported (a typo in a nightly job must not pass for an empty catalog).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.echo import shown
from ..core.errors import ManifestError

__all__ = ["Decision", "Globs", "compile_globs", "decide", "glob_regex"]


@dataclass(frozen=True)
class Globs:
    """Compiled include and exclude patterns, each kept with its text."""

    include: tuple[tuple[str, re.Pattern[str]], ...] = ()
    exclude: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every pattern's text: includes first, then excludes (the order of `Decision.hits`)."""
        return tuple(text for text, _ in self.include) + tuple(text for text, _ in self.exclude)


@dataclass(frozen=True)
class Decision:
    """Whether an id is kept, and the indexes (into `Globs.patterns`) of the patterns it matched."""

    kept: bool
    hits: tuple[int, ...] = ()


def compile_globs(include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Globs:
    """Compile the patterns; raises `ManifestError` (exit 2) for an empty one, naming the flag."""
    def one(flag: str, pattern: str) -> tuple[str, re.Pattern[str]]:
        if not isinstance(pattern, str) or not pattern.strip("/"):
            raise ManifestError(f"{shown(pattern)} is not a pattern: give a glob such as '*.jpg' or "
                                "'2024/**'", source=flag)
        return pattern, re.compile(glob_regex(pattern), re.DOTALL)

    return Globs(tuple(one("--include", p) for p in include), tuple(one("--exclude", p) for p in exclude))


def decide(item_id: str, globs: Globs) -> Decision:
    """Keep `item_id`? Every pattern is tried (not only until one matches), so that the counts of
    what each pattern matched are true."""
    if not globs.include and not globs.exclude:
        return Decision(True)
    hits = tuple(i for i, (_, rx) in enumerate((*globs.include, *globs.exclude)) if rx.fullmatch(item_id))
    included = not globs.include or any(i < len(globs.include) for i in hits)
    excluded = any(i >= len(globs.include) for i in hits)
    return Decision(included and not excluded, hits)


def glob_regex(pattern: str) -> str:
    """The regular expression (for `re.fullmatch`) of one pattern, by the rules above."""
    anchored = pattern.startswith("/")
    body = pattern.lstrip("/")
    if body.endswith("/"):
        body += "**"
    return ("" if anchored else "(?:.*/)?") + _translate(body)


def _translate(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(re.escape(text[i + 1]))
            i += 2
        elif text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and (end := _class_end(text, i)) > 0:
            out.append(_char_class(text[i + 1:end]))
            i = end + 1
        elif char == "{" and (end := _brace_end(text, i)) > 0:
            out.append("(?:" + "|".join(_translate(alt) for alt in _split_top(text[i + 1:end])) + ")")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _class_end(text: str, start: int) -> int:
    """The index of the ``]`` closing the class opened at `start` (-1: none, so ``[`` is literal)."""
    i = start + 1
    if i < len(text) and text[i] in "!^":
        i += 1
    if i < len(text) and text[i] == "]":  # a leading ] is a member, as in fnmatch
        i += 1
    end = text.find("]", i)
    return end


def _char_class(inner: str) -> str:
    negate = inner[:1] in ("!", "^")
    members = inner[1:] if negate else inner
    # Escaped: what would end the class or change its meaning, and what re warns about in a set.
    escaped = "".join("\\" + c if c in "\\^][&~|" else c for c in members)
    # A class never matches '/': the separator is not a character of a name.
    return f"[^/{escaped}]" if negate else f"(?!/)[{escaped}]"


def _brace_end(text: str, start: int) -> int:
    """The index of the ``}`` closing the group opened at `start` (-1: none, or no comma in it,
    so ``{`` is literal)."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i if "," in text[start:i] else -1
        i += 1
    return -1


def _split_top(inner: str) -> list[str]:
    """`inner` split on the commas outside nested braces (an escaped comma stays)."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(inner):
        char = inner[i]
        if char == "\\":
            i += 2
            continue
        if char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
        depth += (char == "{") - (char == "}")
        i += 1
    parts.append(inner[start:])
    return parts
