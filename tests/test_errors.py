from __future__ import annotations

import pytest

from toolkit.execution._errors import (
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
    from toolkit.execution._errors import QuotaExhausted

    assert isinstance(classify(_http(status, message)), QuotaExhausted if status != 400 else BadRequest)


def test_a_plain_429_stays_a_rate_limit() -> None:
    assert isinstance(classify(_http(429, "Rate limit reached for gpt-4o-mini: 500 RPM")), RateLimited)


def test_dspy_billing_errors_are_quota_errors() -> None:
    from toolkit.execution._errors import QuotaExhausted

    billing = type("LMBillingError", (Exception,), {})
    assert isinstance(classify(billing("no credits")), QuotaExhausted)


def test_a_request_that_cannot_be_encoded_is_unsendable_not_a_provider_fault() -> None:
    from toolkit.execution._errors import Unsendable

    try:
        "\ud800".encode("utf-8")
    except UnicodeEncodeError as exc:
        error = classify(exc)
    assert isinstance(error, Unsendable) and not getattr(error, "provider_fault", False)


# ------------------------------------------------------------------ 429s: the wait and the account
def _litellm_429(headers: dict[str, str], message: str = "rate limited") -> Exception:
    import httpx
    import litellm

    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://127.0.0.1/v1"))
    return litellm.RateLimitError(message, llm_provider="openai", model="gpt-4o-mini", response=response)


def test_a_litellm_429_gives_retry_after_ms_and_what_the_headers_said() -> None:
    error = classify(_litellm_429({"retry-after-ms": "1500", "x-ratelimit-limit-tokens": "60000",
                                   "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}))
    assert isinstance(error, RateLimited) and error.retry_after == 1.5
    info = error.rate_info
    assert info is not None and info.source == "openai" and info.retry_after == 1.5
    assert (info.tokens.limit, info.tokens.remaining, info.tokens.reset) == (60000, 0, 360.0)


def test_an_openai_429_with_no_retry_header_waits_what_its_message_says() -> None:
    error = classify(_litellm_429({"x-ratelimit-reset-requests": "20ms"},
                                  "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, "
                                  "Requested 1. Please try again in 20s. Visit https://platform.openai.com"))
    assert isinstance(error, RateLimited) and error.retry_after == 20.0
    assert error.rate_info is not None
    assert error.rate_info.retry_after == 20.0 and error.rate_info.requests.reset == 0.02


def test_the_exceptions_own_retry_after_comes_first_and_headers_are_found_down_the_cause_chain() -> None:
    class LMRateLimitError(Exception):  # DSPy's name; lm15 keeps the headers as name -> every value sent
        retry_after = 4.0
        rate_limit_headers = {"anthropic-ratelimit-requests-remaining": ("0",), "retry-after": ("9",)}

    error = classify(LMRateLimitError("429"))
    assert isinstance(error, RateLimited) and error.retry_after == 4.0
    assert error.rate_info is not None
    assert error.rate_info.source == "anthropic" and error.rate_info.requests.remaining == 0
    wrapped = RuntimeError("wrapped")
    wrapped.status_code = 429
    wrapped.__cause__ = HTTPError(429, {"Retry-After": "3", "x-ratelimit-limit-requests": "10"})
    error = classify(wrapped)
    assert error.retry_after == 3.0 and error.rate_info.requests.limit == 10


def test_a_429_with_nothing_said_has_no_wait_and_no_rate_info() -> None:
    error = classify(HTTPError(429, {"retry-after": "whenever"}))
    assert isinstance(error, RateLimited) and error.retry_after is None and error.rate_info is None
