"""Package data: a non-editable install carries the sample manifests and default.yaml, so `demo` works,
and the HTML report's template."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.cli import demo
from pipeline.data import default_config_path, sample_manifests_dir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "pipeline" / "data"


def shipped_files() -> set[str]:
    """Every data file the package must carry, as paths inside the package (from the source tree)."""
    files = {p.relative_to(REPO).as_posix() for p in (DATA / "sample_manifests").rglob("*") if p.is_file()}
    templates = {p.relative_to(REPO).as_posix() for p in (REPO / "pipeline" / "observe" / "templates").glob("*.j2")}
    return files | templates | {"pipeline/data/default.yaml"}


def source_copy(tmp_path: Path) -> Path:
    """What a build sees of the project (pyproject, README, the package), copied away from the checkout.

    Building in a copy keeps build/ and *.egg-info out of the shared working tree.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def test_the_package_finds_its_data():
    """default.yaml and the sample manifests are found inside the package, and the demo looks there."""
    assert default_config_path().is_file()
    assert demo.SAMPLES_DIR == sample_manifests_dir()
    assert {p.suffix for p in demo.find_manifests(sample_manifests_dir())} == {".jsonl", ".csv", ".yaml"}
    assert sample_manifests_dir().resolve().is_relative_to(DATA.resolve())


def test_build_copies_the_data_into_the_package(tmp_path):
    """setuptools' build_py (what a wheel is made of) copies every sample manifest, its media and default.yaml."""
    src = source_copy(tmp_path)
    out = tmp_path / "build"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(out)], cwd=src, check=True, capture_output=True, timeout=120)
    built = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"pipeline/data/sample_manifests/catalog.jsonl", "pipeline/data/default.yaml"} <= shipped_files()
    assert shipped_files() <= built, shipped_files() - built


_CAN_BUILD_WHEELS = bool(importlib.util.find_spec("wheel")) or bool(
    importlib.util.find_spec("setuptools.command.bdist_wheel"))


@pytest.mark.slow
@pytest.mark.skipif(not _CAN_BUILD_WHEELS, reason="no bdist_wheel in this venv: needs the `wheel` package "
                    "or setuptools >= 70.1 for `pip wheel --no-build-isolation`")
def test_wheel_carries_the_data(tmp_path):
    """`pip wheel --no-deps --no-build-isolation`, offline, gives a wheel holding every sample and default.yaml."""
    src = source_copy(tmp_path)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert shipped_files() <= names, shipped_files() - names
