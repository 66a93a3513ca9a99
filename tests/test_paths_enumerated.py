"""Every option that writes a file or a directory, taken from the argument parser itself, pointed at
every file it was not made for (a finished run's results, rejects, summary, state dir, checkpoint,
manifest, config and metrics files, a directory, devices, symbolic links, a path under a file, a
missing parent): exit 2, one message naming the option and saying how to go on, nothing changed.

A new option that names a path must get a row in `WRITES` or `READS`, or the first test fails;
a row in `WRITES` is then pointed at every target by the second."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from paths_support import ENV, World, changes, fresh_world, make_template, snapshot
from support import REPO, cli_env

from pipeline.cli.main import main
from pipeline.cli.parser import build_parser

#: An option names a path when its metavar says so, or a word of its name does.
PATH_METAVARS = frozenset({"FILE", "PATH", "DIR"})
PATH_WORDS = frozenset({"out", "file", "dir", "path", "config", "manifest"})

#: Options that write, by (command, option): the command line that points the option at `target`
#: (every other option naming the finished run's own files).
WRITES: dict[tuple[str, str], Callable[[World, Path], list[str]]] = {
    ("run", "--out"): lambda w, target: [*w.run_args(), "--out", str(target)],
    ("run", "--state-dir"): lambda w, target: w.run_args("--state-dir", str(target)),
    ("run", "--metrics-file"): lambda w, target: w.run_args("--metrics-file", str(target)),
    ("export", "--out"): lambda w, target: ["export", "--by-item", "--state-dir", str(w.state_dir),
                                            "--out", str(target)],
    ("demo", "--out-dir"): lambda w, target: ["demo", "--out-dir", str(target)],
    ("report", "--out"): lambda w, target: ["report", "--state-dir", str(w.state_dir), "--out", str(target)],
}
#: Options that name a path they only read.
READS = frozenset({
    ("run", "manifest"), ("run", "--config"), ("validate", "manifest"), ("validate", "--config"),
    ("validate", "--state-dir"),
    ("status", "--state-dir"), ("status", "--config"), ("export", "--state-dir"), ("emulator", "--config"),
    ("report", "--state-dir"), ("report", "--config"),
})
#: The targets an option is made for: its own file, and a missing parent where the option
#: creates its directories (documented in README). Every other target is refused.
ACCEPTS: dict[tuple[str, str], frozenset[str]] = {
    ("run", "--out"): frozenset({"results", "missing-parent"}),
    ("run", "--state-dir"): frozenset({"state-dir", "missing-parent"}),
    ("run", "--metrics-file"): frozenset({"metrics"}),
    ("export", "--out"): frozenset(),
    ("demo", "--out-dir"): frozenset({"missing-parent"}),
    ("report", "--out"): frozenset(),
}
TARGETS = tuple(World(Path("/")).targets())
#: Address space for a command pointed at a device (see `contained`).
MEMORY_LIMIT = 2 * 1024**3
#: Words a refusal uses to say how to go on.
REMEDIES = ("give", "move", "pick", "create")


def parser_options() -> dict[tuple[str, str], argparse.Action]:
    """Every argument of every command (and of the main parser, command ""), by its longest name."""
    parser = build_parser(prog="pipeline")
    found: dict[tuple[str, str], argparse.Action] = {}
    for command, sub in [("", parser), *_commands(parser)]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = max(action.option_strings, key=len) if action.option_strings else action.dest
            found[(command, name)] = action
    return found


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    return list(subparsers[0].choices.items())


def names_a_path(action: argparse.Action) -> bool:
    if action.nargs == 0:  # flags: store_true, count, help, version
        return False
    return action.metavar in PATH_METAVARS or bool(PATH_WORDS & set(action.dest.split("_")))


def test_every_option_that_names_a_path_is_in_a_table() -> None:
    """The parser's options that name a path are exactly the WRITES and READS rows, so a writing
    option added later without a row (and so without the refusals below) fails here."""
    found = {key for key, action in parser_options().items() if names_a_path(action)}
    missing, stale = found - set(WRITES) - READS, (set(WRITES) | READS) - found
    assert not missing, f"options naming a path with no row in WRITES (if they write) or READS: {sorted(missing)}"
    assert not stale, f"rows for options the parser does not have (or no longer names a path): {sorted(stale)}"
    assert set(ACCEPTS) == set(WRITES)
    assert all(accepted <= set(TARGETS) for accepted in ACCEPTS.values())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template(tmp_path_factory.mktemp("paths-enumerated"))


@pytest.fixture
def world(template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in [n for n in os.environ if n.startswith(("PIPELINE_", "DASHSCOPE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DASHSCOPE_API_KEY", ENV["DASHSCOPE_API_KEY"])
    yield fresh_world(template)


def contained(argv: list[str]) -> tuple[int, str]:
    """Run the command in a child limited to `MEMORY_LIMIT` of address space: a regression that
    read /dev/full as a file (the old metrics code did, to carry a value over) fails the test
    instead of eating the machine's memory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    done = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True, check=False,
                          env=cli_env(ENV), cwd=REPO, timeout=60, preexec_fn=limit)
    return done.returncode, done.stderr


CASES = [pytest.param(option, target, id=f"{option[0]} {option[1]} -> {target}")
         for option in WRITES for target in TARGETS if target not in ACCEPTS[option]]


@pytest.mark.parametrize(("option", "target"), CASES)
def test_a_writing_option_refuses_what_it_was_not_made_for(world: World, option: tuple[str, str], target: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Pointed at a file, directory, device or link it was not made for, the option is refused
    with exit 2 and one message naming it, and every file and device is as it was."""
    argv = WRITES[option](world, world.targets()[target])
    before = snapshot(world)
    if target == "dev-full":
        code, err = contained(argv)
    else:
        code = main(argv)
        err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert changes(before, snapshot(world)) == []
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err[-3000:]
    assert option[1] in errors[0] and any(word in errors[0] for word in REMEDIES), errors[0]
    assert "Traceback" not in err
