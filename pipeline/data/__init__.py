"""Files shipped inside the package: the sample manifests and the documented default config.

They live here, not at the top of the repository, so that a plain `pip install .` (not only an
editable install from a checkout) carries them and `python -m pipeline demo` works anywhere.
The checkout keeps `sample_manifests/` and `configs/default.yaml` as symlinks to these files.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["default_config_path", "sample_manifests_dir"]


def _here() -> Path:
    # importlib.resources rather than __file__: it is the supported way to find package data.
    # pip installs packages unpacked, so the Traversable is a real directory.
    return Path(str(files(__name__)))


def sample_manifests_dir() -> Path:
    """The directory holding the sample manifests (JSONL, CSV, YAML) and their media."""
    return _here() / "sample_manifests"


def default_config_path() -> Path:
    """`default.yaml`: every config-file key with its built-in default, documented."""
    return _here() / "default.yaml"
