"""The Python API's options, checked before anything starts: a table of good and bad keyword
arguments of `pipeline.run`, each bad one a `ConfigError` (exit code 2) naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.api.options import RunSettings, check_options
from pipeline.core.errors import ConfigError
from pipeline.core.exit_codes import ExitCode


@pytest.mark.parametrize(("options", "named", "says"), [
    ({"max_cots": 1.0}, "max_cots", "did you mean max_cost?"),
    ({"retryfailed": True}, "retryfailed", "did you mean retry_failed?"),
    ({"max-cost": 1.0}, "max-cost", "did you mean max_cost?"),
    ({"zzz": 1}, "zzz", "known: "),
    ({"retry_failed": "yes"}, "retry_failed", "True or False"),
    ({"append": 1}, "append", "True or False"),
    ({"handle_signals": None}, "handle_signals", "True or False"),
    ({"state_dir": ""}, "state_dir", "a path"),
    ({"state_dir": 3}, "state_dir", "a path"),
    ({"workspace": "  "}, "workspace", "non-empty string"),
    ({"max_cost": "10"}, "max_cost", "a number"),
    ({"max_cost": True}, "max_cost", "a number"),
    ({"max_duration": [1]}, "max_duration", "'6h'"),
    ({"progress": "fancy"}, "progress", "auto, rich, plain, off"),
    ({"analyses": "image_analyze,nope"}, "analyses", "unknown capability"),
    ({"analyses": ["image_analyze", "image_analyze"]}, "analyses", "again"),
    ({"analyses": []}, "analyses", "capability names"),
    ({"analyses": [1]}, "analyses", "capability names"),
    ({"shard": "3"}, "shard", "K/N"),
    ({"shard": "5/4"}, "shard", ""),
    ({"include": ""}, "include", "non-empty string"),
    ({"exclude": ["*.jpg", 3]}, "exclude", "non-empty string"),
    ({"include": b"*.jpg"}, "include", "non-empty string"),
    ({"include": "/"}, "include", "is not a pattern"),
    ({"exclude": ["ok/", "//"]}, "exclude", "is not a pattern"),
    ({"follow_symlinks": "yes"}, "follow_symlinks", "True or False"),
    ({"force": 1}, "force", "True or False"),
    ({"force_analysis": "image analyze"}, "force_analysis", "not an analysis name"),
    ({"force_analysis": [None]}, "force_analysis", "non-empty string"),
    ({"forse": True}, "forse", "did you mean force?"),
])
def test_a_bad_option_is_a_config_error_naming_it(options, named, says):
    """Each bad name or value raises ConfigError with the option as its key, the caller as its
    source, and exit code 2."""
    with pytest.raises(ConfigError) as caught:
        check_options(options, caller="pipeline.run()")
    assert caught.value.key == named
    assert caught.value.source == "pipeline.run()"
    assert says in str(caught.value)
    assert caught.value.exit_code is ExitCode.USAGE


def test_good_options_become_settings_and_config_overrides():
    """Every option by its Python name: run settings are parsed, config keys become overrides."""
    settings = check_options({
        "state_dir": Path("/tmp/s"), "analyses": "Extract Image Content, object_detection", "retry_failed": True,
        "append": True, "shard": "1/4", "progress": "plain", "handle_signals": True, "workspace": "w",
        "limiter": "memory", "max_cost": 3, "max_duration": "1h30m", "metrics_file": Path("/tmp/m.prom"),
        "pushgateway": "http://127.0.0.1:9091", "ping_url": "http://127.0.0.1/ping"})
    assert settings.state_dir == Path("/tmp/s")
    assert settings.analyses == ("image_analyze", "object_detection")
    assert settings.retry_failed and settings.append and settings.handle_signals
    assert settings.shard is not None and str(settings.shard) == "1/4"
    assert settings.progress == "plain"
    assert settings.overrides == {"workspace": "w", "limiter": "memory", "max_cost": 3, "max_duration": "1h30m",
                                  "metrics_file": "/tmp/m.prom", "pushgateway": "http://127.0.0.1:9091",
                                  "ping_url": "http://127.0.0.1/ping"}


def test_no_options_are_the_quiet_embedded_defaults():
    """Without options: no progress on stderr, no signal handlers, nothing overridden."""
    assert check_options({}) == RunSettings(progress="off", handle_signals=False, overrides={})


def test_the_catalog_options_become_settings():
    """include/exclude/force_analysis take one string or a list (the flags repeat); follow_symlinks
    and force are booleans; all of them reach the settings the run request is built from."""
    settings = check_options({"include": "*.jpg", "exclude": ["tmp/", "**/x.png"], "follow_symlinks": True,
                              "force": True, "force_analysis": ("describe", "image_analyze")})
    assert settings.include == ("*.jpg",) and settings.exclude == ("tmp/", "**/x.png")
    assert settings.follow_symlinks and settings.force
    assert settings.force_analyses == ("describe", "image_analyze")
    assert check_options({}).include == () and not check_options({}).force
