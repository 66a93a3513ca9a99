"""CLI logging: levels, JSON lines with their extras, the API key redacted, one handler however often set up."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from pipeline.cli.logs import setup_logging

SECRET = "sk-test-secret-0123456789"


@pytest.fixture(autouse=True)
def restore_pipeline_logger() -> Iterator[None]:
    logger = logging.getLogger("pipeline")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.parametrize(("verbose", "quiet", "level"), [
    (0, False, logging.INFO), (1, False, logging.DEBUG), (0, True, logging.WARNING), (2, True, logging.WARNING),
])
def test_levels(verbose, quiet, level):
    """-v gives DEBUG, -q gives WARNING (and wins over -v), neither gives INFO."""
    setup_logging(verbose=verbose, quiet=quiet)
    assert logging.getLogger("pipeline").level == level


def test_setting_up_twice_keeps_one_handler():
    """A second setup replaces the handler, so no line is printed twice."""
    setup_logging()
    setup_logging(fmt="json")
    assert len(logging.getLogger("pipeline").handlers) == 1


def test_json_lines_carry_the_extras(capsys):
    """--log-format json writes one JSON object per line, with level, message and the summary extra."""
    setup_logging(fmt="json")
    logging.getLogger("pipeline.test").info("run %s", "completed", extra={"summary": {"succeeded": 3}})
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert (record["level"], record["message"], record["summary"]) == ("info", "run completed", {"succeeded": 3})
    assert record["ts"].endswith("Z")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_api_key_is_redacted(fmt, capsys, monkeypatch):
    """The DASHSCOPE_API_KEY value never reaches stderr, even when a message contains it."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET)
    setup_logging(fmt=fmt)
    logging.getLogger("pipeline.test").warning("header was Bearer %s", SECRET)
    err = capsys.readouterr().err
    assert "header was Bearer" in err
    assert SECRET not in err
