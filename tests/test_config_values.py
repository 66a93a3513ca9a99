"""Config values checked at load time: endpoint and protocol, the time scale, limits, URLs, the limiter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.config.checks import is_loopback_host
from pipeline.config.load import Config, load_config, parse_duration
from pipeline.core.backoff import RetryPolicy
from pipeline.core.echo import safe_url
from pipeline.core.endpoint import build_base_url
from pipeline.core.errors import ConfigError

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | None = None, *, env: dict[str, str] | None = None, **overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=NO_ENV if env is None else env, overrides=overrides)
    return info.value


# ---- endpoint, protocol, workspace --------------------------------------------------------


def test_a_bare_host_defaults_to_https():
    """A bare --endpoint host is reached over https unless http is asked for, so the key is never sent in clear."""
    config = load_config(None, env=NO_ENV, overrides={"endpoint": "xxx-cn-hangzhou.opensearch.aliyuncs.com"})
    assert config.protocol == "https"
    assert build_base_url(config.endpoint or "", config.protocol, config.workspace).startswith(
        "https://xxx-cn-hangzhou.opensearch.aliyuncs.com/")


@pytest.mark.parametrize(("file_text", "endpoint", "scheme"), [
    ("protocol: http\n", "host.example.com", "http"),
    ("", "http://host.example.com", "http"),
    ("protocol: http\n", "https://host.example.com", "https"),
])
def test_http_only_when_asked(tmp_path, file_text, endpoint, scheme):
    """http is used only for a full http:// URL or an explicit protocol: http; a full URL's scheme wins."""
    config = load_config(write(tmp_path, file_text), env=NO_ENV, overrides={"endpoint": endpoint})
    assert build_base_url(config.endpoint or "", config.protocol, config.workspace).startswith(f"{scheme}://")


@pytest.mark.parametrize(("where", "key", "bad"), [
    ("flag", "endpoint", "http://host/some/path"),
    ("env", "endpoint", "ftp://host"),
    ("file", "endpoint", "not a host"),
    ("flag", "workspace", "a/b"),
    ("env", "workspace", "x y"),
    ("file", "protocol", "ftp"),
])
def test_endpoint_errors_name_where_the_value_came_from(tmp_path, where, key, bad):
    """A bad endpoint, workspace or protocol names its flag (--endpoint), variable (PIPELINE_ENDPOINT) or file."""
    base = "" if key == "endpoint" else "endpoint: host.example.com\n"  # a key given twice is refused
    path = write(tmp_path, f"{base}{key}: {bad!r}\n" if where == "file" else "")
    env = {f"PIPELINE_{key.upper()}": bad} if where == "env" else {}
    flags = {key: bad} if where == "flag" else {}
    err = load_error(path, env=env, **flags)
    expected = {"flag": f"--{key}", "env": f"PIPELINE_{key.upper()}", "file": str(path)}[where]
    assert (err.key, err.source) == (key, expected)
    assert str(err).startswith(f"{expected}: {key}: ")


def test_layers_are_validated_once_merged():
    """A bad value overridden by a higher layer is no error: only the merged result is checked."""
    config = load_config(None, env={"PIPELINE_ENDPOINT": "not a host", "PIPELINE_TIME_SCALE": "5"},
                         overrides={"endpoint": "http://127.0.0.1:8765"})
    assert (config.endpoint, config.time_scale) == ("http://127.0.0.1:8765", 5.0)


# ---- the time scale: environment only, loopback only -------------------------------------


def test_time_scale_is_not_a_config_file_key(tmp_path):
    """time_scale in a config file is refused, and the message points to PIPELINE_TIME_SCALE."""
    path = write(tmp_path, "time_scale: 5\n")
    err = load_error(path)
    assert (err.key, err.source) == ("time_scale", str(path))
    assert "PIPELINE_TIME_SCALE" in str(err)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8765", "127.9.8.7:80", "http://[::1]:8765", "localhost",
                                      "https://LOCALHOST:9", "http://[::ffff:127.0.0.1]:1"])
def test_time_scale_runs_against_loopback(endpoint):
    """PIPELINE_TIME_SCALE is accepted with a loopback endpoint (127.0.0.0/8, ::1, localhost)."""
    config = load_config(None, env={"PIPELINE_TIME_SCALE": "20", "PIPELINE_ENDPOINT": endpoint})
    assert config.time_scale == 20.0
    assert config.limit_rps("audio_asr") == pytest.approx(100.0)


@pytest.mark.parametrize("endpoint", ["xxx.opensearch.aliyuncs.com", "http://10.0.0.8:8765", "http://[::2]:1",
                                      "http://localhost.example.com", "http://128.0.0.1"])
def test_time_scale_is_refused_with_a_remote_endpoint(endpoint):
    """A time scale other than 1 with a non-loopback endpoint is a ConfigError naming PIPELINE_TIME_SCALE."""
    err = load_error(env={"PIPELINE_TIME_SCALE": "5", "PIPELINE_ENDPOINT": endpoint})
    assert err.key == "time_scale" and err.source == "PIPELINE_TIME_SCALE"
    assert "PIPELINE_TIME_SCALE" in err.message and "loopback" in err.message


def test_time_scale_override_keeps_working_for_tests_and_the_demo():
    """overrides={"time_scale": x} and Config(time_scale=x) work with a loopback endpoint, and are checked too."""
    flags = {"time_scale": 50, "endpoint": "http://127.0.0.1:1"}
    assert load_config(None, env=NO_ENV, overrides=flags).time_scale == 50
    assert Config(endpoint="http://127.0.0.1:1", time_scale=50).time_scale == 50
    with pytest.raises(ConfigError, match="PIPELINE_TIME_SCALE"):
        Config(endpoint="https://remote.example.com", time_scale=50)


def test_time_scale_one_runs_anywhere():
    """The default time scale of 1 puts no restriction on the endpoint."""
    env = {"PIPELINE_TIME_SCALE": "1", "PIPELINE_ENDPOINT": "remote.example.com"}
    assert load_config(None, env=env).time_scale == 1


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.255.0.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LocalHost.", True), ("::ffff:127.0.0.1", True), ("128.0.0.1", False), ("10.1.1.1", False),
    ("::2", False), ("example.com", False), ("localhost.example.com", False), ("", False),
])
def test_is_loopback_host(host, loopback):
    """Only localhost, 127.0.0.0/8 and ::1 count as loopback; a DNS name never does."""
    assert is_loopback_host(host) is loopback


# ---- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("6h", 21600.0), ("1d", 86400.0), ("1h30m", 5400.0),
    ("1d2h3m4s", 93784.0), (" 2.5m ", 150.0), ("0.5", 0.5),
])
def test_parse_duration(text, seconds):
    """Durations are seconds, or numbers with d/h/m/s units in falling order."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "-5m", "+5m", "6x", "m", "1h30", "30m1h", "1h1h", "1e3", "5 m", "inf"])
def test_parse_duration_rejects_garbage(text):
    """Signs, unknown or repeated or out-of-order units and empty text raise ValueError saying what is accepted."""
    with pytest.raises(ValueError, match="expected seconds"):
        parse_duration(text)


def test_max_duration_from_a_file_flag_or_number(tmp_path):
    """max_duration takes a duration string or a number in the file, and a string from --max-duration."""
    assert load_config(write(tmp_path, "max_duration: 1h30m\n"), env=NO_ENV).max_duration == 5400.0
    assert load_config(write(tmp_path, "max_duration: 120\n"), env=NO_ENV).max_duration == 120.0
    assert load_config(None, env=NO_ENV, overrides={"max_duration": "6h"}).max_duration == 21600.0


@pytest.mark.parametrize("bad", ["-5m", "6x", "0", 0, -1, math.nan, math.inf])
def test_bad_max_duration_names_the_flag(bad):
    """A bad --max-duration is a ConfigError whose source is --max-duration."""
    err = load_error(max_duration=bad)
    assert (err.key, err.source) == ("max_duration", "--max-duration")


# ---- spend cap ------------------------------------------------------------------------------


def test_max_cost_from_each_layer(tmp_path):
    """max_cost comes from the file, PIPELINE_MAX_COST or --max-cost, the flag winning."""
    path = write(tmp_path, "max_cost: 10\n")
    assert load_config(path, env=NO_ENV).max_cost == 10.0
    assert load_config(path, env={"PIPELINE_MAX_COST": "2.5"}).max_cost == 2.5
    assert load_config(path, env={"PIPELINE_MAX_COST": "2.5"}, overrides={"max_cost": 0.0}).max_cost == 0.0
    assert Config().max_cost is None


@pytest.mark.parametrize("bad", [-0.01, math.inf, math.nan])
def test_bad_max_cost_names_the_flag(bad):
    """A negative or non-finite --max-cost is refused, naming --max-cost."""
    err = load_error(max_cost=bad)
    assert (err.key, err.source) == ("max_cost", "--max-cost")


def test_max_cost_in_a_file_must_be_a_number(tmp_path):
    """max_cost: "cheap" in a file names the key and the file."""
    path = write(tmp_path, "max_cost: cheap\n")
    err = load_error(path)
    assert (err.key, err.source) == ("max_cost", str(path))


# ---- metrics and pings ----------------------------------------------------------------------


def test_metrics_file_must_be_a_file_path(tmp_path):
    """metrics_file is refused, naming --metrics-file, when empty or a directory, and a state dir is not
    offered as the place for one; where it lies (a missing directory, under a file, inside a state
    dir) is the run's path rule's to say (tests/test_unattended.py, tests/test_paths_refusals.py)."""
    assert load_config(None, env=NO_ENV, overrides={"metrics_file": str(tmp_path / "m.prom")}).metrics_file
    err = load_error(metrics_file=str(tmp_path))
    assert (err.key, err.source) == ("metrics_file", "--metrics-file") and "is a directory" in err.message
    (tmp_path / "r.jsonl.state").mkdir()
    (tmp_path / "r.jsonl.state" / "checkpoint.sqlite3").write_bytes(b"")
    err = load_error(metrics_file=str(tmp_path / "r.jsonl.state"))
    assert "state dir" in err.message and "r.jsonl.state/" not in err.message, err.message


@pytest.mark.parametrize("key", ["pushgateway", "ping_url"])
def test_push_and_ping_urls_are_http_only(key):
    """pushgateway and ping_url take http(s) URLs with a host; anything else names the flag."""
    assert getattr(load_config(None, env=NO_ENV, overrides={key: "https://hc-ping.example/abc"}), key)
    flag = "--" + key.replace("_", "-")
    for bad in ("ftp://host/x", "https://", "host:9091", "http://host:port"):
        err = load_error(**{key: bad})
        assert (err.key, err.source) == (key, flag), bad


def test_url_errors_never_echo_a_password():
    """A rejected URL carrying a password is shown with the password masked."""
    err = load_error(pushgateway="ftp://user:s3cret-pw@host")
    assert "s3cret-pw" not in str(err) and "***" in str(err)
    assert safe_url("redis://:pw123@h:6379/0") == "redis://:***@h:6379/0"


# ---- the limiter ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["memory", "redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380"])
def test_limiter_accepts_memory_or_redis(value):
    """limiter is "memory" or a redis:// or rediss:// URL, from PIPELINE_LIMITER or --limiter."""
    assert load_config(None, env={"PIPELINE_LIMITER": value}).limiter == value
    assert load_config(None, env=NO_ENV, overrides={"limiter": value}).limiter == value


@pytest.mark.parametrize("bad", ["redis", "redis://", "http://cache:6379", "Memory", ""])
def test_bad_limiter_names_the_flag(bad):
    """Anything but memory or a Redis URL with a host is refused, naming --limiter."""
    err = load_error(limiter=bad)
    assert (err.key, err.source) == ("limiter", "--limiter")


def test_limiter_namespace_is_checked(tmp_path):
    """limiter_namespace must be a plain key prefix; a space is refused naming the file."""
    assert load_config(write(tmp_path, "limiter_namespace: acct-1:prod\n"), env=NO_ENV).limiter_namespace
    path = write(tmp_path, "limiter_namespace: 'a b'\n")
    assert (load_error(path).key, load_error(path).source) == ("limiter_namespace", str(path))


# ---- ambiguous creates ------------------------------------------------------------------------


def test_ambiguous_creates_from_a_file(tmp_path):
    """retry.ambiguous_creates defaults to 1, may be set to 0, and a negative value names the key and file."""
    assert Config().retry.ambiguous_creates == RetryPolicy().ambiguous_creates == 1
    assert load_config(write(tmp_path, "retry:\n  ambiguous_creates: 0\n"), env=NO_ENV).retry.ambiguous_creates == 0
    path = write(tmp_path, "retry:\n  ambiguous_creates: -1\n")
    err = load_error(path)
    assert (err.key, err.source) == ("retry.ambiguous_creates", str(path))


# ---- output templates -------------------------------------------------------------------------


def test_outputs_default_to_none_and_aliases_load_as_canonical_names(tmp_path):
    """No templates by default; a capability given by an alias is stored under its canonical name."""
    assert Config().outputs == {}
    path = write(tmp_path, "outputs:\n  Segment Video: 'oss://b/seg/{analysis}/{id}/'\n"
                           "  video_summarization: 'oss://b/sum/{capability}/{id}/'\n")
    assert load_config(path, env=NO_ENV).outputs == {"video_segmentation": "oss://b/seg/{analysis}/{id}/",
                                                     "video_summarization": "oss://b/sum/{capability}/{id}/"}


@pytest.mark.parametrize(("entry", "says"), [
    ("video_segmentation: 'oss://b/{item}/'", "unknown placeholder {item}"),
    ("video_segmentation: 'oss://b/{id:>10}/'", "unknown placeholder {id:>10}"),
    ("video_segmentation: 'oss://b/{id'", "is not a valid template"),
    ("video_segmentation: 's3://b/{id}/'", "must start with oss://"),
    ("video_segmentation: 'oss://{id}/x/'", "bucket written out"),
    ("video_segmentation: 5", "got 5"),
    ("teleport: 'oss://b/{id}/'", "unknown capability (known: image_analyze"),
    ("ocr: 'oss://b/{id}/'", "image_analyze takes no output location"),
    ("object_detection: 'oss://b/{id}/'", "object_detection takes no output location"),
    ("video segmentation: 'oss://b/x/{id}/'\n  video_segmentation: 'oss://b/y/{id}/'", "has a template already"),
    ("video_segmentation: 'oss://b/results/'", "must hold {id}"),  # every item under one prefix
    ("video_segmentation: 'oss://b/results/{id}'", "must end with '/'"),
])
def test_bad_output_templates_name_the_key_and_the_file(tmp_path, entry, says):
    """A template with an unknown placeholder, a non-OSS or bucketless prefix, for an unknown capability
    or one that takes no output, or twice for one capability, is refused at load naming outputs.<name>."""
    path = write(tmp_path, f"outputs:\n  {entry}\n")
    err = load_error(path)
    assert err.key is not None and err.key.startswith("outputs.") and err.source == str(path)
    assert says in str(err) and err.key in str(err)


def test_outputs_must_be_a_mapping(tmp_path):
    """`outputs: oss://...` (one template for everything) is refused: it is a mapping by capability."""
    err = load_error(write(tmp_path, "outputs: 'oss://b/{id}/'\n"))
    assert err.key == "outputs" and "mapping" in str(err)


# ---- the file itself: aliases, size, encoding, repeated keys, echoed values ---------------

_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


@pytest.mark.parametrize(("text", "says"), [
    (_LAUGHS, "anchors and aliases"),
    ("retry: &r {attempts: 3}\npoll: *r\n", "anchors and aliases"),
    ("endpoint: a.example.com\nendpoint: b.example.com\n", "given twice"),
    ("qps:\n" + "  " * 1 + "[" * 150 + "]" * 150 + "\n", "nested deeper"),
    ("workspace: \x00\n", "U+0000"),
])
def test_a_config_file_that_means_something_else_is_refused(tmp_path, text, says):
    """Aliases (a 600-byte file describing gigabytes), repeated keys, deep nesting and NUL bytes are refused
    at once with a one-line message naming the file, as in manifests."""
    path = write(tmp_path, text)
    err = load_error(path)
    assert says in str(err)
    assert str(path) in str(err)
    assert len(str(err)) < 600


@pytest.mark.parametrize(("text", "key"), [
    ("workspace: " + "w/" * 50_000 + "\n", "workspace"),
    ("qps: {image_analyze: [" + ", ".join(["1"] * 50_000) + "]}\n", "qps.image_analyze"),
    ("x" * 1000 + ": 1\n", "x"),  # PyYAML takes keys up to 1024 characters
    ("prices: {" + "p" * 1000 + ": {request: -1}}\n", "prices"),
])
def test_every_echoed_value_in_a_config_error_is_bounded(tmp_path, text, key):
    """A huge value, key or list in a config file is quoted by a bounded excerpt, not echoed whole."""
    err = load_error(write(tmp_path, text))
    assert key in str(err)
    assert len(str(err)) < 800


def test_a_config_file_that_is_not_utf8_or_too_big_or_a_directory_is_refused(tmp_path):
    """Bytes that are not UTF-8, a file over 1 MB (/dev/zero would never end) and a directory each get a message."""
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"workspace: caf\xe9\n")
    assert "UTF-8" in str(load_error(bad))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert "larger than" in str(load_error(big))
    assert "is a directory" in str(load_error(tmp_path))


def test_a_bom_is_accepted_in_a_config_file(tmp_path):
    """A UTF-8 BOM (as some editors save) is read past, not taken for part of the first key."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfworkspace: mine\n")
    assert load_config(path, env=NO_ENV, overrides={}).workspace == "mine"


@pytest.mark.parametrize(("key", "value"), [("metrics_file", "run.prom"), ("pushgateway", "http://127.0.0.1:9091")])
def test_metrics_options_without_the_metrics_extra_are_refused_at_load(tmp_path, monkeypatch, key, value):
    """--metrics-file and --pushgateway without prometheus-client installed are a config error naming the
    option and the extra to install, before anything starts (the push used only to warn at the end)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "prometheus_client" else real(name, *a))
    if key == "metrics_file":
        value = str(tmp_path / value)
    err = load_error(**{key: value})
    assert err.key == key and "[metrics]" in str(err)


@pytest.mark.parametrize("key, value", [
    ("endpoint", "http://user:s3cret-pw@127.0.0.1:1"),
    ("endpoint", "htp://user:s3cret-pw@127.0.0.1:1"),
    ("endpoint", "http://user:s3cret-pw@127.0.0.1:99999"),
    ("ping_url", "http://user:s3cret-pw@127.0.0.1:1/x#frag"),
    ("pushgateway", "http://user:s3cret-pw@127.0.0.1:1/path?q=1"),
    ("limiter", "redis://user:s3cret-pw@127.0.0.1:1/0#x"),
])
def test_a_refused_url_never_shows_its_password(key: str, value: str) -> None:
    """Whichever URL option refuses a value typed with user:password@, the message masks the password."""
    with pytest.raises(ConfigError) as caught:
        cfg = load_config(None, overrides={key: value}, env=NO_ENV)
        build_base_url(cfg.endpoint or "", cfg.protocol, cfg.workspace)
    assert "s3cret-pw" not in str(caught.value)
