"""The command line's grammar: `build_parser()` for `python -m pipeline` and `media-pipeline`.

Only arguments live here; `main.py` runs the commands. Two habits of the parser:

- `-v`, `-q` and `--log-format` work before or after the command (`-v run …` and `run … -v`):
  they are defined on the main parser with real defaults and again on each command with
  `argparse.SUPPRESS` defaults, so a command's copy sets the value only when it is given.
- the program name in `--help` and `--version` is the one the user typed: `media-pipeline`
  for the console script, `python -m pipeline` when run as a module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from ..config.load import FLAG_KEYS
from ..core.exit_codes import ExitCode, epilog

__all__ = ["MODULE_PROG", "analyses_list", "build_parser", "config_overrides", "default_prog", "wants_json_logs"]

#: What `--help` calls the program when it runs as `python -m pipeline`.
MODULE_PROG = "python -m pipeline"


def default_prog(argv0: str) -> str:
    """The program name for `argv0` (`sys.argv[0]`): the console script's own name, or
    `python -m pipeline` when Python runs the package's `__main__.py` (or `-c`)."""
    name = os.path.basename(argv0)
    if name.lower().endswith(".exe"):  # Windows console-script launchers
        name = name[: -len(".exe")]
    if name in ("", "-c", "__main__.py", "__main__"):
        return MODULE_PROG
    return name


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given as flags (`config.load.FLAG_KEYS`), for `load_config(..., overrides=...)`;
    None = not given."""
    return {key: getattr(args, key, None) for key in FLAG_KEYS}


class _Once(argparse.Action):
    """An option that names one thing (the report's state dir, its file): given twice, with two
    values, is an error rather than the last one silently winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None and earlier != values:
            parser.error(f"{option_string} given twice ({earlier!s:.80} and {values!s:.80}): give it once")
        setattr(namespace, self.dest, values)


def _logging_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the main parser the defaults are real; on a command they are SUPPRESS, so that an
    # option not repeated after the command leaves the main parser's value alone.
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("logging (before or after the command)")
    group.add_argument("-v", "--verbose", action="count", default=default(0),
                       help="more detail (repeatable)")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False),
                       help="only warnings and errors")
    group.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                       help="json: one JSON object per stderr line, for scheduled runs")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or resume) a manifest", description="Run a manifest, or resume it "
                       "when the state dir already holds this run. The API key comes from DASHSCOPE_API_KEY.",
                       epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", metavar="SOURCE", help="a JSONL, CSV, YAML or TXT (a source per line) manifest "
                   "(- reads JSONL from stdin), a local directory, or oss://BUCKET/PREFIX")
    p.add_argument("--config", metavar="FILE", help="YAML config file (every key: configs/default.yaml)")
    _analyses_option(p)
    _listing_options(p)
    p.add_argument("--force", action="store_true",
                   help="process every (item, analysis) the source yields again, unchanged ones too")
    p.add_argument("--force-analysis", action="append", default=[], metavar="NAME",
                   help="process this analysis of every item again (repeatable); analyses after it follow")
    p.add_argument("--out", default="results.jsonl", metavar="FILE",
                   help="results file (default: results.jsonl); rejects and summary files are named after it")
    p.add_argument("--state-dir", metavar="DIR",
                   help="checkpoint directory (default: <out>.state next to the results)")
    p.add_argument("--endpoint", metavar="URL",
                   help="service URL (https://host, http://127.0.0.1:8765) or a bare host, reached over "
                        "https; env PIPELINE_ENDPOINT")
    p.add_argument("--workspace", metavar="NAME", help="workspace name (default: default)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run failed items again (PollTimeout tasks are polled, not resubmitted)")
    p.add_argument("--append", action="store_true",
                   help="this manifest's items join the run already in the state dir, instead of "
                        "being refused as another run's")
    p.add_argument("--shard", metavar="K/N",
                   help="run only the items whose id hashes to K mod N (K may be 'auto': "
                        "JOB_COMPLETION_INDEX); --out and the state dir get a per-shard name; every run "
                        "of one --out must use the same N (another is refused: exit 2)")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "off"), default="auto",
                   help="live progress on stderr (auto: rich on a terminal, plain lines otherwise)")
    p.add_argument("--limiter", metavar="URL",
                   help="QPS pacer: memory (default), or a redis:// URL shared by every process on the "
                        "account; env PIPELINE_LIMITER")
    limits = p.add_argument_group("limits (either stops the run resumable)")
    limits.add_argument("--max-cost", type=float, metavar="AMOUNT",
                        help="spend cap in the price table's currency; env PIPELINE_MAX_COST; with --shard "
                             "it is per shard (each shard has its own ledger: N shards may spend N x AMOUNT)")
    limits.add_argument("--max-duration", metavar="DURATION",
                        help="stop after this long: seconds, or 90s, 15m, 6h, 1d, 1h30m")
    unattended = p.add_argument_group("unattended runs")
    unattended.add_argument("--metrics-file", metavar="PATH",
                            help="write Prometheus metrics to this textfile (its directory must exist; an "
                                 "existing file is replaced only when it is a textfile this pipeline wrote)")
    unattended.add_argument("--pushgateway", metavar="URL", help="push the final metrics to this Pushgateway")
    unattended.add_argument("--ping-url", metavar="URL", help="ping this URL at start and end (dead man's switch)")
    _logging_options(p, top=False)


def _listing_options(p: argparse.ArgumentParser) -> None:
    """The options of a listed source (a directory, oss://BUCKET/PREFIX)."""
    group = p.add_argument_group("listed sources (a directory or oss://BUCKET/PREFIX)")
    group.add_argument("--include", action="append", default=[], metavar="GLOB",
                       help="take only ids matching GLOB (repeatable; rclone rules: * within a directory, ** across)")
    group.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                       help="leave out ids matching GLOB (repeatable)")
    group.add_argument("--follow-symlinks", action="store_true",
                       help="follow symbolic links in a directory (they are skipped and counted otherwise)")


def analyses_list(text: str) -> tuple[str, ...]:
    """`--analyses image_analyze,object_detection`: capability names, comma-separated."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give capability names separated by commas, "
                                         "e.g. image_analyze,object_detection")
    return names


def _analyses_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--analyses", type=analyses_list, metavar="CAP[,CAP...]",
                   help="analyses for items that name neither capability nor analyses (and for every "
                        "line of a .txt manifest), e.g. image_analyze,object_detection")


def wants_json_logs(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for JSON logs, told without parsing it (a usage error is what
    stops the parser): the last `--log-format` given wins, as argparse's would."""
    wanted = False
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            wanted = argv[i + 1] == "json"
        elif arg.startswith("--log-format="):
            wanted = arg.split("=", 1)[1] == "json"
    return wanted


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors come as one JSON record when the command line asks for
    JSON logs (a scheduler parsing stderr line by line gets its record, not argparse's text)."""

    @staticmethod
    def json_errors() -> bool:
        """Whether usage errors are JSON records (a subclass per command line says)."""
        return False

    def error(self, message: str) -> NoReturn:
        if not self.json_errors():
            super().error(message)
        from .logs import JsonFormatter

        record = logging.LogRecord("pipeline.cli", logging.ERROR, __file__, 0, "%s: error: %s",
                                   (self.prog, message), None)
        record.event = "usage_error"
        self.exit(int(ExitCode.USAGE), JsonFormatter().format(record) + "\n")


def build_parser(prog: str | None = None, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; `prog` None means "derived from sys.argv[0]" (`default_prog`).
    `argv` (default: sys.argv[1:]) is read only to tell whether usage errors should be JSON."""
    class Parser(_Parser):
        @staticmethod
        def json_errors() -> bool:
            return wants_json_logs(sys.argv[1:] if argv is None else argv)

    parser = Parser(
        prog=prog if prog is not None else default_prog(sys.argv[0]),
        description="Batch pipeline for the OpenSearch multimodal content services.",
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _logging_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    _add_run(sub)

    p = sub.add_parser("validate", help="check every manifest line; no network")
    p.add_argument("manifest", metavar="SOURCE", help="JSONL, CSV, YAML or TXT manifest (- reads JSONL from "
                   "stdin), a local directory, or oss://BUCKET/PREFIX (listed: that needs OSS)")
    p.add_argument("--config", metavar="FILE", help="YAML config file (prices, output templates)")
    _analyses_option(p)
    _listing_options(p)
    p.add_argument("--state-dir", metavar="DIR",
                   help="a run's state dir: also count what is new, changed, unchanged and vanished against it, "
                        "and what that delta will cost (read-only; nothing is sent)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _logging_options(p, top=False)

    p = sub.add_parser("status", help="what runs (finished, crashed or running) have done so far")
    p.add_argument("--state-dir", metavar="DIR", action="append", required=True,
                   help="a run's checkpoint directory; repeat it to see several runs")
    p.add_argument("--config", metavar="FILE", help="YAML config file (prices for the cost estimate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--history", action="store_true",
                   help="the run history instead: one line per session (start, duration, outcome, counts, cost)")
    _logging_options(p, top=False)

    p = sub.add_parser("report", help="a run's self-contained HTML report (plots, failures, history)",
                       description="Write a run's report as one HTML file that loads nothing from anywhere. Works "
                                   "on a live run (a snapshot, marked live). Needs the `report` extra.")
    p.add_argument("--state-dir", metavar="DIR", required=True, action=_Once, help="the run's checkpoint directory")
    p.add_argument("--out", metavar="FILE", action=_Once,
                   help="where to write (default: the run's results.report.html, next to its summary); an "
                        "existing file is replaced only when it is an earlier report")
    p.add_argument("--config", metavar="FILE", help="YAML config file (prices, limits, endpoint for the retry command)")
    _logging_options(p, top=False)

    p = sub.add_parser("export", help="a run's current results (one line per live item and analysis), by item, "
                                      "or what changed; JSONL or Parquet")
    p.add_argument("--by-item", action="store_true",
                   help="one object (Parquet: row) per item: {id, meta, status, analyses}")
    p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                   help="jsonl (default) or parquet (needs --out FILE and pyarrow: the parquet extra)")
    p.add_argument("--changes", action="store_true",
                   help="only the delta: current lines written after run --since-run, and a "
                        "{id, analysis, vanished: true} record per result that vanished since")
    p.add_argument("--since-run", type=int, metavar="N",
                   help="with --changes: after which run (session number, in the summary's catalog.session; "
                        "default: the one before the last run's first session, so the last run's delta, "
                        "an interrupted session and its resume both in it)")
    p.add_argument("--state-dir", metavar="DIR", required=True, help="the run's checkpoint directory")
    p.add_argument("--out", metavar="FILE", default="-",
                   help="where to write (default: - for stdout); an existing file is replaced only when it is "
                        "an earlier export")
    _logging_options(p, top=False)

    p = sub.add_parser("demo", help="run the sample manifests through an in-process emulator")
    p.add_argument("--out-dir", default="demo-output", metavar="DIR",
                   help="where results, rejects, summaries and state go (default: demo-output); a new or "
                        "empty directory, or one an earlier demo made")
    p.add_argument("--time-scale", type=float, default=20.0,
                   help="run the emulator and the client this many times faster than the "
                        "real service (default: 20)")
    p.add_argument("--keep", action="store_true",
                   help="keep the earlier output (the runs resume) instead of starting fresh")
    _logging_options(p, top=False)

    # The emulator keeps its own options (it also runs alone); its cli module is light to import.
    from ..emulator import cli as emulator_cli

    p = sub.add_parser("emulator", help="run the local OpenSearch-compatible emulator")
    emulator_cli.add_arguments(p)
    _logging_options(p, top=False)
    return parser
