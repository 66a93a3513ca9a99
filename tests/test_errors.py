"""The exception tree and the pure status/code -> exception classification."""

from __future__ import annotations

import pickle

import pytest

from pipeline.core.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    InvalidParameter,
    ManifestError,
    PermanentError,
    PipelineError,
    RateLimited,
    RetryableError,
    ServerError,
    ServiceError,
    TaskNotExist,
    TransportError,
    classify,
    redact,
)

CASES = [
    # status, code, expected class, family, expected code
    (400, "InvalidParameter", InvalidParameter, PermanentError, "InvalidParameter"),
    (400, "BadRequest.TaskNotExist", TaskNotExist, PermanentError, "BadRequest.TaskNotExist"),
    (404, "BadRequest.TaskNotExist", TaskNotExist, PermanentError, "BadRequest.TaskNotExist"),
    (400, None, InvalidParameter, PermanentError, "BadRequest"),
    (404, None, InvalidParameter, PermanentError, "NotFound"),
    (413, None, InvalidParameter, PermanentError, None),
    (401, None, AuthError, FatalError, "Unauthorized"),
    (401, "InvalidApiKey", AuthError, FatalError, "InvalidApiKey"),
    (403, None, AuthError, FatalError, "Forbidden"),
    (429, None, RateLimited, RetryableError, "TooManyRequests"),
    (429, "Throttling", RateLimited, RetryableError, "Throttling"),
    (500, "InternalServerError", ServerError, RetryableError, "InternalServerError"),
    (502, None, ServerError, RetryableError, "BadGateway"),
    (503, None, ServerError, RetryableError, "ServiceUnavailable"),
    (599, None, ServerError, RetryableError, "InternalServerError"),
    (None, "Timeout", TransportError, RetryableError, "Timeout"),
    (None, None, TransportError, RetryableError, "ConnectionError"),
    (301, None, EndpointError, FatalError, "MovedPermanently"),
]


@pytest.mark.parametrize(("status", "code", "cls", "family", "expected_code"), CASES)
def test_classify_table(status, code, cls, family, expected_code):
    """Each (HTTP status, service code) maps to exactly one class and family, keeping a useful code."""
    err = classify(status, code, "msg", "req-1", None)
    assert type(err) is cls
    assert isinstance(err, family) and isinstance(err, ServiceError) and isinstance(err, PipelineError)
    families = [f for f in (RetryableError, PermanentError, FatalError) if isinstance(err, f)]
    assert families == [family]
    if expected_code is not None:
        assert err.code == expected_code
    assert err.code  # never empty
    assert err.http_status == status
    assert err.request_id == "req-1"


def test_classify_keeps_retry_after_and_fills_missing_message():
    """classify carries retry_after through and writes a message when the server sent none."""
    err = classify(429, None, None, None, 3.0)
    assert err.retry_after == 3.0
    assert err.message == "HTTP 429"
    assert err.request_id is None


def test_to_dict_is_the_result_line_shape():
    """to_dict gives exactly the error object of a result line."""
    err = classify(400, "InvalidParameter", "file_name is required", "r", None)
    assert err.to_dict() == {"code": "InvalidParameter", "message": "file_name is required", "http_status": 400}
    assert TransportError("Timeout", "slow").to_dict() == {"code": "Timeout", "message": "slow", "http_status": None}


def test_str_names_code_status_request_id_and_attempts():
    """str(error) tells a human the code, message, status, request id and attempt count."""
    err = classify(500, "InternalServerError", "boom", "req-9", None)
    err.attempts = 5
    text = str(err)
    for part in ("InternalServerError", "boom", "HTTP 500", "req-9", "5 attempts"):
        assert part in text


def test_default_code_per_class():
    """A class built without a code gets its documented default code."""
    assert ServerError(None, "x").code == "InternalServerError"
    assert TransportError(None, "x").code == "ConnectionError"
    assert TaskNotExist(None, "x").code == "BadRequest.TaskNotExist"


def test_service_error_pickles_with_its_fields():
    """A ServiceError survives pickling (process pools, logging handlers) with all its fields."""
    err = RateLimited("TooManyRequests", "slow down", http_status=429, request_id="r", retry_after=2.5, attempts=3)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is RateLimited
    assert (copy.code, copy.message, copy.http_status, copy.request_id, copy.retry_after, copy.attempts) == (
        "TooManyRequests",
        "slow down",
        429,
        "r",
        2.5,
        3,
    )


def test_config_error_names_key_and_file():
    """ConfigError's message names the key and the file, and it is also a ValueError."""
    err = ConfigError("must be >= 1, got 0", key="retry.max_attempts", source="configs/nightly.yaml")
    assert isinstance(err, PipelineError) and isinstance(err, ValueError)
    assert str(err) == "configs/nightly.yaml: retry.max_attempts: must be >= 1, got 0"
    assert (err.key, err.source) == ("retry.max_attempts", "configs/nightly.yaml")
    assert str(ConfigError("bad")) == "bad"


def test_manifest_error_names_file_and_line():
    """ManifestError's message names the file and line when known."""
    assert str(ManifestError("not UTF-8", source="m.jsonl", line=7)) == "m.jsonl:7: not UTF-8"
    assert str(ManifestError("empty")) == "empty"
    assert isinstance(ManifestError("x"), PipelineError)


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("key sk-123 is invalid", "sk-123", "key *** is invalid"),
        ("sk-123sk-123", "sk-123", "******"),
        ("nothing here", "sk-123", "nothing here"),
        ("Bearer sk-123", None, "Bearer sk-123"),
        ("Bearer sk-123", "", "Bearer sk-123"),
    ],
)
def test_redact(text, secret, expected):
    """redact replaces every occurrence of the secret with *** and leaves text alone without one."""
    assert redact(text, secret) == expected
