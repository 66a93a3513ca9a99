"""The spend ledger and the cap against a catalog re-run (emulator on 127.0.0.1): a changed key's
new cost adds to what its old line settled (money spent twice is spent), the --max-cost preview
counts changed items, `--force-analysis NAME` must name an analysis the run knows, and `status`
does not count vanished units as queued."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from run_support import config, emulator
from support import read_results, write_manifest

from pipeline.cli.main import exit_code_for
from pipeline.config.load import Config
from pipeline.config.pricing import line_cost
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import ResultLine, RunFiles
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.engine.runner import RunRequest, RunResult, run

KEY = "engine-test-key"

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's time scale, its key)."""
    return emulator()


def image(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/p{i}.jpg", **extra}


async def session(tmp: Path, manifest: Path, cfg: Config, **request: Any) -> RunResult:
    return await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                api_key=KEY, config=cfg, **request))


def spent(tmp: Path, cfg: Config) -> float:
    """What every line of the results file cost, superseded lines included: what was billed."""
    return sum(line_cost(ResultLine.from_json(line), cfg.prices)
               for line in (tmp / "results.jsonl").read_bytes().splitlines())


async def test_a_changed_keys_new_cost_adds_to_its_old_one(tmp_path: Path, emu: RunningEmulator) -> None:
    """Under a cap, night 2 re-runs a changed item: the ledger's settled total is the cost of every
    line written (night 1's three and the changed one's new line), not night 1's with the changed
    item's old cost replaced by its new one."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    cfg = config(emu, max_cost=100.0)
    first = await session(tmp_path, manifest, cfg)
    write_manifest(manifest, [image(0, url="https://example.com/other-and-longer-name.jpg"), image(1), image(2)])
    second = await session(tmp_path, manifest, cfg)
    assert second.summary["catalog"]["changed"] == 1 and len(read_results(tmp_path / "results.jsonl")) == 4
    assert first.summary["spend"]["settled"] == pytest.approx(spent(tmp_path, cfg) - _last_cost(tmp_path, cfg))
    assert second.summary["spend"]["settled"] == pytest.approx(spent(tmp_path, cfg), abs=1e-6)


def _last_cost(tmp: Path, cfg: Config) -> float:
    return line_cost(ResultLine.from_json((tmp / "results.jsonl").read_bytes().splitlines()[-1]), cfg.prices)


async def test_the_cap_preview_counts_changed_items(tmp_path: Path, emu: RunningEmulator,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Night 2 changes every item's URL under a cap that covers two of them: before anything is
    sent, the preview warns that the three analyses left will likely cost more than the cap leaves
    (it counted done items as nothing left to do, so said nothing)."""
    rows = [image(i) for i in range(3)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    await session(tmp_path, manifest, config(emu))
    write_manifest(manifest, [image(i, url=f"https://example.com/new{i}.jpg") for i in range(3)])
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        await session(tmp_path, manifest, config(emu, max_cost=0.002))
    assert any("the 3 analyses left will likely cost" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records]


async def test_force_analysis_must_name_a_known_analysis(tmp_path: Path, emu: RunningEmulator) -> None:
    """`--force-analysis NAME` for an analysis the run does not know stops with exit 2 naming the
    known ones, before anything is written or sent; a known one is forced."""
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "a", "url": "https://example.com/a.jpg", "analyses": [{"name": "ocr", "capability": "image_analyze"}]}])
    await session(tmp_path, manifest, config(emu))
    before = (tmp_path / "results.jsonl").read_bytes()
    with pytest.raises(Exception) as caught:
        await session(tmp_path, manifest, config(emu), force_analyses=("orc",))
    assert exit_code_for(caught.value) == ExitCode.USAGE
    assert "'orc'" in str(caught.value) and "ocr" in str(caught.value)
    assert (tmp_path / "results.jsonl").read_bytes() == before
    forced = await session(tmp_path, manifest, config(emu), force_analyses=("ocr",))
    assert forced.summary["catalog"]["changed"] == 1


async def test_status_does_not_count_vanished_units_as_queued(tmp_path: Path, emu: RunningEmulator) -> None:
    """An item appended for a day and then gone from the catalog's complete run is vanished: the
    run is finished, and `status` says nothing is queued (it counted the vanished unit as not
    started)."""
    from pipeline.cli.status import status

    catalog = write_manifest(tmp_path / "catalog.jsonl", [image(i) for i in range(3)])
    day = write_manifest(tmp_path / "day.jsonl", [image(7)])
    await session(tmp_path, catalog, config(emu))
    await session(tmp_path, day, config(emu), append=True)
    final = await session(tmp_path, catalog, config(emu))
    assert final.summary["catalog"]["vanished"] == 1 and final.exit_code == ExitCode.OK
    code, report = status([tmp_path / "state"], Config())
    run_ = report["runs"][0] if "runs" in report else report
    assert (run_["queued"], run_["succeeded"], code) == (0, 3, ExitCode.OK), run_


async def test_a_vanished_items_cost_stays_spent_under_the_cap(tmp_path: Path, emu: RunningEmulator) -> None:
    """An item removed from the catalog leaves the current view, not the bill: the settled total
    keeps its line's cost, so a new item that the cap no longer covers is not sent (exit 6)."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(0), image(1)])
    cfg = config(emu)
    first = await session(tmp_path, manifest, cfg)
    both = spent(tmp_path, cfg)
    capped = config(emu, max_cost=both)
    assert first.exit_code == ExitCode.OK
    write_manifest(manifest, [image(0)])
    removed = await session(tmp_path, manifest, capped)
    assert removed.summary["catalog"]["vanished"] == 1
    assert removed.summary["spend"]["settled"] == pytest.approx(both, abs=1e-6)
    write_manifest(manifest, [image(0), image(2)])
    added = await session(tmp_path, manifest, capped)
    assert added.exit_code == ExitCode.SPEND_CAP, added.summary
    assert spent(tmp_path, cfg) == pytest.approx(both, abs=1e-6)  # nothing more was billed


async def test_a_changed_service_id_is_priced_at_the_new_services_price(tmp_path: Path,
                                                                      emu: RunningEmulator) -> None:
    """Items run with the OCR service, then changed to the VLM service (priced per token): the
    settled spend is what every line written cost, each at its own service's price (the key's row
    kept the old service id, so the new lines were priced as OCR)."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    cfg = config(emu)
    await session(tmp_path, manifest, cfg)
    write_manifest(manifest, [image(i, service_id="ops-image-analyze-vlm-001") for i in range(3)])
    second = await session(tmp_path, manifest, cfg)
    assert second.summary["catalog"]["changed"] == 3
    assert second.summary["spend"]["settled"] == pytest.approx(spent(tmp_path, cfg), rel=1e-6)
    assert spent(tmp_path, cfg) > 3 * 0.001 * 2  # the VLM lines cost more than OCR's: a real difference


async def test_a_cap_below_one_analysis_bound_says_none_will_be_sent(tmp_path: Path, emu: RunningEmulator,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A cap that covers the likely cost of one VLM analysis but not the bound the cap reserves
    before sending it: the preview says none will be sent (it said it would "likely cover about
    1", then sent nothing), and nothing is."""
    manifest = write_manifest(tmp_path / "m.jsonl",
                              [image(i, service_id="ops-image-analyze-vlm-001") for i in range(3)])
    before = sum(emu.counters()["submissions"].values())
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        result = await session(tmp_path, manifest, config(emu, max_cost=5.0))
    messages = [r.getMessage() for r in caplog.records]
    assert any("none will be sent" in m for m in messages), messages
    assert not any("likely cover about" in m for m in messages), messages
    assert result.exit_code == ExitCode.SPEND_CAP and sum(emu.counters()["submissions"].values()) == before
