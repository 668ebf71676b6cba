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
    def __init__(self, status, headers=None, message=None):
        super().__init__(message or f"HTTP {status}")
        self.status_code = status
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


def _http(status: int, message: str) -> HTTPError:
    return HTTPError(status, message=message)


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


@pytest.mark.parametrize("status, message", [
    (429, "You exceeded your current quota, please check your plan and billing details."),
    (429, '{"error": {"type": "insufficient_quota"}}'),
    (402, "Payment Required"),
    (400, "Your credit balance is too low to access the Anthropic API."),
])
def test_an_exhausted_quota_is_fatal_not_a_rate_limit(status: int, message: str) -> None:
    from toolkit.errors import QuotaExhausted

    assert isinstance(classify(_http(status, message)), QuotaExhausted if status != 400 else BadRequest)


def test_a_plain_429_stays_a_rate_limit() -> None:
    assert isinstance(classify(_http(429, "Rate limit reached for gpt-4o-mini: 500 RPM")), RateLimited)


def test_dspy_billing_errors_are_quota_errors() -> None:
    from toolkit.errors import QuotaExhausted

    billing = type("LMBillingError", (Exception,), {})
    assert isinstance(classify(billing("no credits")), QuotaExhausted)


def test_a_request_that_cannot_be_encoded_is_unsendable_not_a_provider_fault() -> None:
    from toolkit.errors import Unsendable

    try:
        "\ud800".encode("utf-8")
    except UnicodeEncodeError as exc:
        error = classify(exc)
    assert isinstance(error, Unsendable) and not getattr(error, "provider_fault", False)
