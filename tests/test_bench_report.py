"""The benchmark report renders every prose figure from the results, and re-renders from results.json."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ is a directory of the repository, not an installed package: import it from there.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import __main__ as bench_main  # noqa: E402
from bench import report  # noqa: E402
from bench.figures import Figure, ScenarioResult  # noqa: E402

RESULTS = REPO / "bench" / "results.json"


@pytest.fixture
def results_data() -> dict[str, Any]:
    """The committed results.json, as data."""
    data: dict[str, Any] = json.loads(RESULTS.read_text())
    return data


def _render(data: dict[str, Any], tmp_path: Path) -> str:
    json_path, md_path = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    json_path.write_text(json.dumps(data))
    assert bench_main.report_only(json_path, md_path) == 0
    return md_path.read_text()


def test_report_only_reproduces_the_committed_markdown(tmp_path: Path) -> None:
    """Rendering the committed results.json again gives exactly the committed BENCHMARKS.md."""
    md_path = tmp_path / "BENCHMARKS.md"
    assert bench_main.report_only(RESULTS, md_path) == 0
    assert md_path.read_text() == (REPO / "BENCHMARKS.md").read_text()


def test_prose_follows_a_changed_raw_number(results_data: dict[str, Any], tmp_path: Path) -> None:
    """Changing a raw number in results.json changes the sentence that quotes it (nothing is typed in)."""
    before = _render(results_data, tmp_path)
    changed = copy.deepcopy(results_data)
    raw = changed["scenarios"]["baselines"]["raw"]
    raw["concurrency"] = 77
    raw["gather"]["seconds"] = 42.5
    changed["scenarios"]["resume"]["raw"]["build_s"] = 99.0
    after = _render(changed, tmp_path)
    assert "concurrency 77" in after and "concurrency 77" not in before
    assert "ran all 300 in 42.50 s" in after
    assert "State built in 99 s" in after


def test_every_scenario_has_notes_from_raw(results_data: dict[str, Any]) -> None:
    """Each scenario module renders at least one note from the committed raw results, without error."""
    machine = results_data["machine"]
    for key, scenario in results_data["scenarios"].items():
        notes = bench_main.SCENARIOS[key].notes(scenario["raw"], machine)
        assert notes and all(isinstance(n, str) and n for n in notes), key


def test_resume_note_describes_current_resume_behaviour(results_data: dict[str, Any]) -> None:
    """The resume note says a state with no read position is compared in full once, the next
    resume starts where it read to, and recorded tasks are polled."""
    text = " ".join(bench_main.SCENARIOS["resume"].notes(results_data["scenarios"]["resume"]["raw"], {}))
    assert "compares the whole catalog once" in text and "starts where this one read to" in text
    assert "polled, not resubmitted" in text and "reconcile" in text
    assert "fully validates" not in text


def test_figure_round_trips_through_results_json() -> None:
    """A figure written to results.json reads back with the same value, target, digits and verdict."""
    figure = Figure("rate", 0.91234, unit="x", target=(">=", 0.95), digits=2, note="n")
    back = Figure.from_dict(json.loads(json.dumps(figure.to_dict())))
    assert (back.value, back.target, back.digits, back.verdict, back.shown()) == (0.91234, (">=", 0.95), 2, "MISS",
                                                                                    "0.91")


def test_report_only_without_results_is_a_usage_error(tmp_path: Path) -> None:
    """--report-only with no results.json exits 2 and writes nothing."""
    md_path = tmp_path / "BENCHMARKS.md"
    assert bench_main.report_only(tmp_path / "missing.json", md_path) == 2
    assert not md_path.exists()


def test_failed_scenario_is_listed_without_notes() -> None:
    """A scenario that failed to run shows as ERROR in the table and gets no notes rendered."""
    failed = ScenarioResult("memory", "Memory", raw={"error": "RuntimeError: boom"})
    bench_main.render_notes(failed, {})
    assert failed.notes == []
    assert "**ERROR**" in report.table([failed])


def test_a_fresh_report_and_its_re_render_agree_on_rounded_seconds(results_data: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    """The markdown written right after a run shows seconds as results.json keeps them (to 0.1 s),
    so `--report-only` gives the same text: 46.52 s is stored as 46.5 and shown as 46 both times."""
    result = ScenarioResult("sync_ceiling", "t", raw={"error": "not run"}, seconds=46.52)
    json_path, fresh, again = tmp_path / "results.json", tmp_path / "fresh.md", tmp_path / "again.md"
    report.write([result], markdown_path=fresh, json_path=json_path, machine=results_data["machine"], command="c",
                 date="d",
                 total_seconds=100.46, partial=True)
    bench_main.report_only(json_path, again)
    assert "Took 46 s." in fresh.read_text()
    assert fresh.read_text() == again.read_text()
