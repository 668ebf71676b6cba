from __future__ import annotations

import pytest

from toolkit.errors import (
    AuthenticationFailed,
    BadRequest,
    CallTimeout,
    ConnectionFailed,
    ContextLengthExceeded,
    MalformedReply,
    NotFound,
    Overloaded,
    RateLimited,
    ServerError,
    classify,
)


class HTTPError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequest), (401, AuthenticationFailed), (403, AuthenticationFailed), (404, NotFound),
     (429, RateLimited), (500, ServerError), (502, ServerError), (503, Overloaded), (529, Overloaded),
     (422, BadRequest)],
)
def test_http_status_codes(status, cls):
    assert type(classify(HTTPError(status))) is cls


def test_retry_after_header_is_read():
    error = classify(HTTPError(429, {"retry-after": "12"}))
    assert isinstance(error, RateLimited) and error.retry_after == 12.0


def test_builtin_errors_and_messages():
    assert isinstance(classify(TimeoutError()), CallTimeout)
    assert isinstance(classify(ConnectionResetError()), ConnectionFailed)
    assert isinstance(classify(ValueError("This model's maximum context length is 8192 tokens")), ContextLengthExceeded)
    assert isinstance(classify(ValueError("Expecting value: invalid JSON")), MalformedReply)
    assert isinstance(classify(RuntimeError("something odd")), ServerError)
    already = RateLimited("x", retry_after=1)
    assert classify(already) is already
