"""The command-line grammar: logging flags on either side of the command, --version, prog, run's flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.cli.parser import MODULE_PROG, build_parser, config_overrides, default_prog
from pipeline.config.load import ENV_ONLY_KEYS, FILE_KEYS, FLAG_KEYS, flag_of, load_config
from pipeline.core.exit_codes import ExitCode

PROG = "media-pipeline"

#: The shortest valid command line of each command.
COMMANDS = {
    "run": ["run", "m.jsonl"],
    "validate": ["validate", "m.jsonl"],
    "status": ["status", "--state-dir", "s"],
    "demo": ["demo"],
    "emulator": ["emulator"],
}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(PROG).parse_args(list(argv))


def output_of(argv: list[str], capsys: pytest.CaptureFixture[str], prog: str | None = PROG) -> tuple[int, str]:
    """Exit code and stdout of a parse that ends the program (--help, --version, errors)."""
    with pytest.raises(SystemExit) as info:
        build_parser(prog).parse_args(argv)
    return int(info.value.code or 0), capsys.readouterr().out


# ---- logging flags before or after the command ----------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_logging_flags_before_the_command(command):
    """-v, -q and --log-format given before any command reach the namespace."""
    args = parse("-vv", "-q", "--log-format", "json", *COMMANDS[command])
    assert (args.command, args.verbose, args.quiet, args.log_format) == (command, 2, True, "json")


@pytest.mark.parametrize("command", COMMANDS)
def test_logging_flags_after_the_command(command):
    """-v, -q and --log-format given after the command reach the namespace too."""
    args = parse(*COMMANDS[command], "-v", "-q", "--log-format", "json")
    assert (args.command, args.verbose, args.quiet, args.log_format) == (command, 1, True, "json")


@pytest.mark.parametrize("command", COMMANDS)
def test_logging_defaults_when_not_given(command):
    """Without logging flags every command gets verbose 0, quiet off and text logs."""
    args = parse(*COMMANDS[command])
    assert (args.verbose, args.quiet, args.log_format) == (0, False, "text")


def test_flags_before_survive_a_command_that_does_not_repeat_them():
    """A command's own copies of the logging flags leave the values given before it alone."""
    args = parse("-v", "--log-format", "json", "run", "m.jsonl", "-q")
    assert (args.verbose, args.quiet, args.log_format) == (1, True, "json")


def test_the_value_after_the_command_wins():
    """Given on both sides, the value after the command is the one used."""
    assert parse("--log-format", "json", "run", "m.jsonl", "--log-format", "text").log_format == "text"


# ---- --version and the program name ------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    """--version prints the program name and pipeline.__version__, and exits 0."""
    code, out = output_of(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"{PROG} {__version__}"


@pytest.mark.parametrize(("argv0", "prog"), [
    ("/opt/venv/bin/media-pipeline", "media-pipeline"),
    ("media-pipeline", "media-pipeline"),
    ("media-pipeline.exe", "media-pipeline"),
    ("/home/u/.local/bin/nightly-media", "nightly-media"),
    ("/src/project/pipeline/__main__.py", MODULE_PROG),
    ("-c", MODULE_PROG),
    ("", MODULE_PROG),
])
def test_default_prog(argv0, prog):
    """The console script is called by its own name; the package run as a module is "python -m pipeline"."""
    assert default_prog(argv0) == prog


def test_prog_is_derived_from_argv0_when_not_given(monkeypatch, capsys):
    """build_parser() without prog names the program after sys.argv[0], in help and in the version line."""
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/media-pipeline", "--version"])
    assert build_parser().prog == "media-pipeline"
    monkeypatch.setattr(sys, "argv", ["/src/pipeline/__main__.py"])
    assert build_parser().prog == MODULE_PROG
    _, out = output_of(["run", "--help"], capsys, prog=None)
    assert out.startswith(f"usage: {MODULE_PROG} run ")


def test_help_shows_the_given_prog(capsys):
    """The main and command help start with the program name the user typed."""
    code, out = output_of(["--help"], capsys)
    assert code == 0 and out.startswith(f"usage: {PROG} ")
    _, out = output_of(["status", "--help"], capsys)
    assert out.startswith(f"usage: {PROG} status ")


# ---- run ------------------------------------------------------------------------------------


def test_run_help_lists_every_exit_code_on_its_own_line(capsys):
    """run --help ends with the exit-code table, one code per line with its meaning, lines kept."""
    _, out = output_of(["run", "--help"], capsys)
    lines = out.splitlines()
    for code in ExitCode:
        assert f"  {int(code)}  {code.meaning}" in lines, code
    assert lines.index("exit codes:") < lines.index(f"  {int(ExitCode.OK)}  {ExitCode.OK.meaning}")


def test_main_help_lists_every_exit_code(capsys):
    """The main --help carries the exit-code table too."""
    _, out = output_of(["--help"], capsys)
    assert all(f"  {int(code)}  {code.meaning}" in out.splitlines() for code in ExitCode)


def test_run_flags_parse_and_reach_the_config(tmp_path):
    """run's limit, metrics, ping, limiter and endpoint flags parse, and config_overrides feeds them to load_config."""
    args = parse("run", "m.jsonl", "--endpoint", "http://127.0.0.1:8765", "--workspace", "ws",
                 "--max-cost", "12.5", "--max-duration", "1h30m", "--metrics-file", str(tmp_path / "p.prom"),
                 "--pushgateway", "http://127.0.0.1:9091", "--ping-url", "https://hc.example/ping/abc",
                 "--limiter", "redis://127.0.0.1:6379/0", "--append")
    assert args.max_cost == 12.5 and args.max_duration == "1h30m" and args.append is True
    config = load_config(None, env={}, overrides=config_overrides(args))
    assert (config.endpoint, config.workspace, config.max_cost, config.max_duration) == (
        "http://127.0.0.1:8765", "ws", 12.5, 5400.0)
    assert (config.metrics_file, config.pushgateway, config.ping_url, config.limiter) == (
        str(tmp_path / "p.prom"), "http://127.0.0.1:9091", "https://hc.example/ping/abc", "redis://127.0.0.1:6379/0")


def test_the_run_flags_that_are_config_keys_are_config_s_list():
    """run offers a flag for exactly the config keys of FLAG_KEYS, each spelled flag_of(key), so an error in
    its value names the flag the user typed."""
    commands = next(a for a in build_parser(PROG)._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    options = {action.dest: action.option_strings for action in run._actions}
    assert {dest for dest in options if dest in FILE_KEYS | ENV_ONLY_KEYS} == set(FLAG_KEYS)
    assert all(options[key] == [flag_of(key)] for key in FLAG_KEYS)


def test_run_flags_left_out_are_none():
    """Flags not given are None in config_overrides, so they do not clobber the file or environment."""
    args = parse("run", "m.jsonl")
    assert set(config_overrides(args).values()) == {None}
    assert args.append is False


def test_max_cost_must_be_a_number(capsys):
    """--max-cost abc is a usage error (exit 2) naming the flag."""
    with pytest.raises(SystemExit) as info:
        parse("run", "m.jsonl", "--max-cost", "abc")
    assert info.value.code == 2
    assert "--max-cost" in capsys.readouterr().err


# ---- status -----------------------------------------------------------------------------------


def test_status_takes_several_state_dirs():
    """status --state-dir is repeatable and keeps the order given."""
    assert parse("status", "--state-dir", "a", "--state-dir", "b").state_dir == ["a", "b"]
    assert parse("status", "--state-dir", "only").state_dir == ["only"]


@pytest.mark.parametrize("argv", [["status"], [], ["nonsense"]])
def test_missing_or_unknown_command_parts_are_usage_errors(argv, capsys):
    """No command, an unknown command, or status without --state-dir exits 2."""
    code, _ = output_of(argv, capsys)
    assert code == 2


# ---- usage errors as JSON when JSON logs are asked for ----------------------------------------

@pytest.mark.parametrize("argv", [
    ["--log-format", "json", "run"],  # a missing argument, in the subparser
    ["run", "m.jsonl", "--log-format=json", "--bogus"],  # an unknown flag, at the top
    ["--log-format", "json", "run", "m.jsonl", "--max-cost", "abc"],  # a bad value
    ["--log-format", "json", "nosuchcommand"],
])
def test_a_usage_error_is_one_json_record_when_json_logs_are_asked(argv, capsys):
    """With --log-format json (before or after the command), argparse's errors come as one JSON line
    on stderr, exit 2, so a scheduler parsing stderr gets a record instead of usage text."""
    with pytest.raises(SystemExit) as info:
        build_parser(PROG, argv=argv).parse_args(argv)
    assert info.value.code == ExitCode.USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "error" and record["event"] == "usage_error"
    assert "error:" in record["message"]


def test_a_usage_error_stays_text_otherwise(capsys):
    """Without JSON logs (or with --log-format text given last) the error is argparse's usual text."""
    argv = ["--log-format", "json", "run", "--log-format", "text"]
    with pytest.raises(SystemExit):
        build_parser(PROG, argv=argv).parse_args(argv)
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "required: SOURCE" in err


@pytest.mark.parametrize("argv, says", [
    (["report", "--state-dir", "a", "--state-dir", "b"], "--state-dir given twice (a and b)"),
    (["report", "--state-dir", "a", "--out", "x.html", "--out", "y.html"], "--out given twice (x.html and y.html)"),
])
def test_a_report_option_given_twice_is_refused(argv: list[str], says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`report` reads one state dir and writes one file: the same option twice with two values
    is a usage error naming both, not the last one silently used."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2 and says in capsys.readouterr().err


def test_report_out_dash_is_refused_not_written_as_a_file_named_dash(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`report --out -` wrote a file named "-": it is refused (exit 2) and nothing is written."""
    from pipeline.cli.main import main
    from pipeline.state.checkpoint import Checkpoint

    Checkpoint.open(tmp_path / "s").close()
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--state-dir", str(tmp_path / "s"), "--out", "-"]) == 2
    assert not (tmp_path / "-").exists()
