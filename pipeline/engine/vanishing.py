"""Whether a session's read may decide what vanished, and among which items. Pure.

"Vanished" means gone from the catalog, so only a read that saw the catalog whole may say it;
each row below is a read that would otherwise take what it did not see for what was removed:

| the read                                                          | vanished decided        |
|-------------------------------------------------------------------|-------------------------|
| stopped part way, `--append`, a `pipeline.stream`, not the catalog| no                      |
| a listing that could not read a subtree                           | no                      |
| zero items (an empty folder, prefix or manifest, patterns that    | no: warned, "nothing is |
| matched nothing, every line rejected)                             | marked vanished"        |
| a rejected line with no readable id                               | no: warned              |
| otherwise                                                         | yes, see below          |

Among the keys it may decide, a key stays live when its item id:

- is outside this run's `--include` / `--exclude` (`admitted`): filtered out is not removed, so a
  night run with `--include '2024/**'` leaves every other item as it was;
- was on a line this read rejected (an invalid service id, a file it could not stat): the item is
  there, and its last good result stays current (the rejects file says why its line was refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.job import KEY_SEP
from ..manifest.globs import Globs, decide

__all__ = ["VanishRule", "admitted", "vanish_rule"]


@dataclass(frozen=True)
class VanishRule:
    """Whether vanished is decided; `why` (a warning) when it is not and the user should know."""

    decides: bool
    why: str = ""


def vanish_rule(*, complete: bool, whole_catalog: bool, unreadable: bool, items: int,
                unidentified: int) -> VanishRule:
    """The rule of the module docstring's table. `complete`: the read ran to its end;
    `whole_catalog`: not stopped, not `--append`, not a stream, the run's first source;
    `unreadable`: a listing skipped a subtree; `items`: (item, analysis) units the read found (a
    part skipped as unchanged included); `unidentified`: rejected lines with no readable id."""
    if not complete or not whole_catalog:
        return VanishRule(False)
    if unreadable:
        return VanishRule(False, "parts of the source could not be read, so nothing is marked vanished on this run")
    if items == 0:
        return VanishRule(False, "the source listed no items: nothing is marked vanished (an empty folder, prefix or "
                                 "manifest, or patterns that matched nothing, is taken for a mistake, not for a "
                                 "catalog emptied)")
    if unidentified:
        return VanishRule(False, f"{unidentified} rejected line(s) have no readable id, so nothing is marked vanished "
                                 "on this run (their items may be among the missing): fix them (see the rejects "
                                 "file) and run again")
    return VanishRule(True)


def admitted(globs: Globs) -> Callable[[str], bool] | None:
    """Whether a checkpoint key's item id is one this run's patterns admit (None: no patterns,
    every key is). A key is ``item id`` + `KEY_SEP` + analysis (a bare id in an old state dir)."""
    if not globs.include and not globs.exclude:
        return None
    return lambda key: decide(key.split(KEY_SEP, 1)[0], globs).kept
