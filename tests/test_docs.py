"""The project's own docs: the exit-code table matches ExitCode, env variables are documented, no outside pointers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config.load import ENV_KEYS
from pipeline.core.exit_codes import ExitCode
from pipeline.data import default_config_path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
#: Pointers to the planning files outside the repository, which readers of the repository cannot follow.
OUTSIDE = re.compile(r"\.\./shared|PROTOCOL\.md|DESIGN\.md")


def test_design_exit_code_table_is_the_enum():
    """docs/design.md's exit-code table lists exactly the ExitCode members, with their names and meanings."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|$", text, flags=re.MULTILINE)
    assert rows == [(str(int(c)), c.name, c.meaning) for c in ExitCode]


def test_readme_advice_column_is_the_enum():
    """README's exit-code table says, per code, exactly the `ExitCode.advice` the HTML report shows."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d) \| .+? \| (.+?) \|$", text, flags=re.MULTILINE)
    assert rows == [(str(int(c)), c.advice) for c in ExitCode]


@pytest.mark.parametrize("var", sorted(set(ENV_KEYS) - {"PIPELINE_TIME_SCALE"}))
def test_every_config_variable_is_documented(var):
    """Each PIPELINE_* config variable is named in docs/design.md and in default.yaml's header."""
    assert var in (DOCS / "design.md").read_text(encoding="utf-8")
    assert var in default_config_path().read_text(encoding="utf-8")


def test_time_scale_is_documented_as_a_test_facility_only():
    """default.yaml has no time_scale key but explains PIPELINE_TIME_SCALE as a test/demo facility."""
    text = default_config_path().read_text(encoding="utf-8")
    assert not re.search(r"^time_scale:", text, flags=re.MULTILINE)
    assert "PIPELINE_TIME_SCALE" in text and "test/demo facility" in text


@pytest.mark.parametrize("name", ["protocol.md", "design.md"])
def test_docs_point_only_inside_the_repository(name):
    """The docs name no planning file outside the repository, and their relative links resolve."""
    text = (DOCS / name).read_text(encoding="utf-8")
    assert not OUTSIDE.search(text)
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (DOCS / target).exists(), target
