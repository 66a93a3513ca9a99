"""Config loading: defaults, file < environment < flags, errors naming key and source, time_scale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config.load import FILE_KEYS, Config, FailureThreshold, load_config
from pipeline.core.backoff import PollPolicy, RetryPolicy
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import ConfigError
from pipeline.data import default_config_path, sample_manifests_dir

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- defaults and precedence ------------------------------------------------------------


def test_no_file_no_env_no_flags_gives_the_dataclass_defaults():
    """With nothing given, load_config returns exactly Config()'s defaults."""
    config = load_config(None, env=NO_ENV)
    assert config == Config()
    assert config.retry == RetryPolicy()
    assert config.polling == PollPolicy()
    assert config.failure_threshold == FailureThreshold()


def test_defaults_carry_the_documented_qps_limits():
    """Default QPS limits are the documented ones: image analyze 10, object detection 20, each video/audio service 5."""
    qps = Config().qps
    assert set(qps) == set(CAPABILITIES)
    assert qps["image_analyze"] == 10
    assert qps["object_detection"] == 20
    for name in ("video_segmentation", "video_snapshot", "video_summarization", "audio_asr"):
        assert qps[name] == 5


def test_empty_file_gives_the_defaults(tmp_path):
    """An empty YAML file (every key optional) changes nothing."""
    assert load_config(write(tmp_path, ""), env=NO_ENV) == Config()


def test_file_overrides_defaults(tmp_path):
    """Values in the YAML file replace the defaults, nested sections and qps entries key by key."""
    path = write(tmp_path, """
endpoint: file.example.com
workspace: nightly
submit_workers: 3
polls_share_qps: false
qps_headroom: 1        # an int where a float is expected is accepted
qps:
  image_analyze: 4
retry:
  max_attempts: 7
polling:
  first_delay: 2.5
""")
    config = load_config(path, env=NO_ENV)
    assert config.endpoint == "file.example.com"
    assert config.workspace == "nightly"
    assert config.submit_workers == 3
    assert config.polls_share_qps is False
    assert config.qps_headroom == 1.0 and isinstance(config.qps_headroom, float)
    assert config.qps["image_analyze"] == 4
    assert config.qps["object_detection"] == 20  # untouched entries keep their defaults
    assert config.retry.max_attempts == 7
    assert config.retry.base == RetryPolicy().base
    assert config.polling.first_delay == 2.5
    assert config.polling.timeout == PollPolicy().timeout


def test_environment_overrides_the_file(tmp_path):
    """PIPELINE_ENDPOINT, PIPELINE_TIME_SCALE and PIPELINE_POLLS_SHARE_QPS win over the file's values."""
    path = write(tmp_path, "endpoint: file.example.com\npolls_share_qps: true\nworkspace: w1\n")
    env = {
        "PIPELINE_ENDPOINT": "http://127.0.0.1:8765",
        "PIPELINE_TIME_SCALE": "50",
        "PIPELINE_POLLS_SHARE_QPS": "false",
    }
    config = load_config(path, env=env)
    assert config.endpoint == "http://127.0.0.1:8765"
    assert config.time_scale == 50.0
    assert config.polls_share_qps is False
    assert config.workspace == "w1"  # not in the environment: the file's value stays


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("ON", True), ("true", True),
                                                ("0", False), ("no", False), ("off", False), ("False", False)])
def test_environment_booleans(raw, expected):
    """PIPELINE_POLLS_SHARE_QPS accepts the usual spellings of true and false."""
    assert load_config(None, env={"PIPELINE_POLLS_SHARE_QPS": raw}).polls_share_qps is expected


def test_flags_override_the_environment(tmp_path):
    """Command-line overrides win over both the environment and the file."""
    path = write(tmp_path, "endpoint: file.example.com\nworkspace: from-file\n")
    env = {"PIPELINE_ENDPOINT": "env.example.com", "PIPELINE_WORKSPACE": "from-env"}
    config = load_config(path, env=env, overrides={"endpoint": "flag.example.com", "workspace": "from-flag"})
    assert config.endpoint == "flag.example.com"
    assert config.workspace == "from-flag"


def test_none_overrides_are_ignored(tmp_path):
    """A flag left unset (None) does not clobber the file or environment value."""
    path = write(tmp_path, "workspace: from-file\n")
    config = load_config(path, env={"PIPELINE_ENDPOINT": "env.example.com"},
                         overrides={"endpoint": None, "workspace": None, "submit_workers": 2})
    assert config.endpoint == "env.example.com"
    assert config.workspace == "from-file"
    assert config.submit_workers == 2


def test_env_none_reads_the_process_environment(monkeypatch):
    """Without an explicit env mapping, the real process environment is consulted."""
    monkeypatch.setenv("PIPELINE_ENDPOINT", "process-env.example.com")
    assert load_config(None).endpoint == "process-env.example.com"


# ---- errors name the key and the file ---------------------------------------------------


def config_error(path: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=NO_ENV, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus_key: 1\n", "bogus_key"),
        ("retry:\n  bogus: 1\n", "retry.bogus"),
        ("submit_workers: many\n", "submit_workers"),
        ("polls_share_qps: 'yes'\n", "polls_share_qps"),
        ("qps:\n  image_analyze: -1\n", "qps.image_analyze"),
        ("qps:\n  unknown_cap: 3\n", "qps.unknown_cap"),
        ("qps: 5\n", "qps"),
        ("retry: 3\n", "retry"),
        ("retry:\n  max_attempts: 0\n", "retry.max_attempts"),
        ("submit_workers: 0\n", "submit_workers"),
        ("submit_workers: true\n", "submit_workers"),
        ("time_scale: 5\n", "time_scale"),
        ("endpoint: 123\n", "endpoint"),
        ("failure_threshold:\n  max_ratio: 2\n", "failure_threshold.max_ratio"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path, text, key):
    """Unknown keys, wrong types and out-of-range values raise ConfigError naming the dotted key and the file."""
    path = write(tmp_path, text)
    err = config_error(path)
    assert err.key == key
    assert err.source == str(path)
    assert key in str(err)
    assert str(path) in str(err)


def test_unknown_key_error_lists_the_known_keys(tmp_path):
    """An unknown nested key's message says which keys would have been accepted."""
    err = config_error(write(tmp_path, "retry:\n  bogus: 1\n"))
    assert "max_attempts" in str(err)


def test_invalid_yaml_names_the_file(tmp_path):
    """A file that is not YAML raises ConfigError naming the file."""
    path = write(tmp_path, "endpoint: [unclosed\n")
    err = config_error(path)
    assert str(path) in str(err)
    assert "YAML" in str(err)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    """A YAML list or scalar at the top level raises ConfigError naming the file."""
    path = write(tmp_path, text)
    err = config_error(path)
    assert str(path) in str(err)
    assert "mapping" in str(err)


def test_missing_file_names_the_file(tmp_path):
    """A config path that does not exist raises ConfigError (not OSError) naming the file."""
    path = tmp_path / "nope.yaml"
    err = config_error(path)
    assert str(path) in str(err)


def test_config_error_is_a_value_error(tmp_path):
    """ConfigError is also a ValueError, so generic callers can catch it."""
    assert isinstance(config_error(write(tmp_path, "bogus: 1\n")), ValueError)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PIPELINE_TIME_SCALE": "fast"}, "time_scale"),
        ({"PIPELINE_POLLS_SHARE_QPS": "maybe"}, "polls_share_qps"),
        ({"PIPELINE_TIME_SCALE": "0"}, "time_scale"),
        ({"PIPELINE_TIME_SCALE": "inf"}, "time_scale"),
        ({"PIPELINE_PROTOCOL": "ftp"}, "protocol"),
        ({"PIPELINE_ENDPOINT": "not a host"}, "endpoint"),
        ({"PIPELINE_WORKSPACE": "a/b"}, "workspace"),
        ({"PIPELINE_MAX_COST": "cheap"}, "max_cost"),
        ({"PIPELINE_MAX_COST": "-1"}, "max_cost"),
        ({"PIPELINE_LIMITER": "mysql://db"}, "limiter"),
    ],
)
def test_bad_environment_values_name_the_variable(env, key):
    """A bad PIPELINE_* value raises ConfigError with the config key as key and the variable as source."""
    (var,) = env
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert info.value.key == key
    assert info.value.source == var
    assert str(info.value).startswith(f"{var}: {key}: ")


def test_bad_override_without_a_flag_names_the_command_line():
    """A bad override for a key with no flag of its own names the key and the command line as source."""
    with pytest.raises(ConfigError) as info:
        load_config(None, env=NO_ENV, overrides={"submit_workers": "lots"})
    assert info.value.key == "submit_workers"
    assert info.value.source == "command line"
    assert "command line" in str(info.value)


def test_config_is_frozen():
    """A loaded Config cannot be mutated by accident."""
    config = Config()
    with pytest.raises(AttributeError):
        config.workspace = "other"  # type: ignore[misc]


# ---- effective values -------------------------------------------------------------------


def test_effective_qps_applies_time_scale_and_headroom():
    """effective_qps multiplies the configured limit by time_scale and qps_headroom."""
    config = Config(time_scale=10.0, qps_headroom=0.9, qps={**Config().qps, "image_analyze": 4.0})
    assert config.effective_qps("image_analyze") == pytest.approx(4.0 * 10.0 * 0.9)
    assert config.effective_qps("object_detection") == pytest.approx(20 * 10.0 * 0.9)


def test_effective_qps_default_headroom_is_below_the_limit():
    """At time_scale 1 the client aims a little under each limit, never over it."""
    config = Config()
    for name, limit in config.qps.items():
        assert 0 < config.effective_qps(name) <= limit


def test_effective_retry_divides_delays_by_time_scale():
    """effective_retry divides base, max_delay and retry_after_cap by time_scale; counts are unchanged."""
    config = Config(time_scale=4.0, retry=RetryPolicy(base=2.0, max_delay=40.0, retry_after_cap=60.0, max_attempts=6))
    r = config.effective_retry()
    assert (r.base, r.max_delay, r.retry_after_cap) == pytest.approx((0.5, 10.0, 15.0))
    assert r.max_attempts == 6
    assert r.factor == 2.0
    assert config.retry.base == 2.0  # the original is untouched


def test_effective_polling_divides_delays_by_time_scale():
    """effective_polling divides first_delay, max_delay and timeout by time_scale; growth and jitter stay."""
    config = Config(time_scale=5.0, polling=PollPolicy(first_delay=5.0, max_delay=30.0, timeout=3600.0))
    p = config.effective_polling()
    assert (p.first_delay, p.max_delay, p.timeout) == pytest.approx((1.0, 6.0, 720.0))
    assert (p.growth, p.jitter) == (PollPolicy().growth, PollPolicy().jitter)


def test_time_scale_from_the_environment_reaches_the_effective_values():
    """PIPELINE_TIME_SCALE flows through to effective_qps and effective_polling."""
    config = load_config(None, env={"PIPELINE_TIME_SCALE": "50"})
    assert config.effective_qps("audio_asr") == pytest.approx(5 * 50 * config.qps_headroom)
    assert config.effective_polling().first_delay == pytest.approx(PollPolicy().first_delay / 50)


# ---- validation of values that used to slip through ------


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_non_finite_qps_is_rejected(tmp_path, value):
    """A QPS limit of nan or inf is rejected at load time, naming the key and the file."""
    path = write(tmp_path, f"qps:\n  image_analyze: {value}\n")
    try:
        load_config(path, env=NO_ENV)
    except ConfigError as err:
        assert err.key == "qps.image_analyze" and str(path) in str(err)
    else:
        raise AssertionError("nan/inf QPS was accepted")


@pytest.mark.parametrize(("text", "key"), [
    ("prices:\n  ops-x: 5\n", "prices.ops-x"),
    ("prices:\n  ops-x:\n    request: cheap\n", "prices.ops-x.request"),
])
def test_bad_price_entries_are_rejected(tmp_path, text, key):
    """A price table entry that is not a mapping of numbers is rejected at load time, naming the key."""
    path = write(tmp_path, text)
    try:
        load_config(path, env=NO_ENV)
    except ConfigError as err:
        assert err.key == key and str(path) in str(err)
    else:
        raise AssertionError("a malformed price entry was accepted")


def test_default_yaml_documents_exactly_the_defaults() -> None:
    """The packaged default.yaml sets every config-file key (not time_scale); loading it gives the defaults."""
    path = default_config_path()
    data = yaml.safe_load(path.read_text())
    assert set(data) == FILE_KEYS == {f.name for f in dataclasses.fields(Config)} - {"time_scale", "sources"}
    assert set(data["retry"]) == {f.name for f in dataclasses.fields(RetryPolicy)}
    assert set(data["polling"]) == {f.name for f in dataclasses.fields(PollPolicy)}
    assert load_config(path, env={}) == Config()


def test_checkout_paths_are_symlinks_to_the_package_data() -> None:
    """configs/default.yaml and sample_manifests/ in the checkout are the packaged files, not copies."""
    repo = Path(__file__).resolve().parent.parent
    assert (repo / "configs" / "default.yaml").resolve() == default_config_path().resolve()
    assert (repo / "sample_manifests").resolve() == sample_manifests_dir().resolve()
    assert (repo / "configs" / "default.yaml").is_symlink() and (repo / "sample_manifests").is_symlink()
