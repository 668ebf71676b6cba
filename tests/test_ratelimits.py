"""What a provider's replies say about the account's limits: the header and message parsers (with
properties: they never raise, durations round-trip), the feed, and every header family carried over
real HTTP through the real client stack (``resolve_lm`` and a ``dspy`` call) to ``resolved.rates``
and to the classified error."""

from __future__ import annotations

import threading
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.ratelimits import (
    Budget,
    RateFeed,
    RateInfo,
    format_duration,
    parse_duration,
    parse_rate_headers,
    retry_after_from_message,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
OPENAI = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
          "x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": "98500",
          "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}


def _rfc3339(seconds_from_now: float) -> str:
    return datetime.fromtimestamp(NOW + seconds_from_now, timezone.utc).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ parsers
@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("120ms", 0.12),
    ("2m59.56s", 179.56), ("1.5", 1.5), ("7", 7.0), ("250us", 0.00025), (" 3s ", 3.0),
])
def test_durations_as_openai_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1s2", "abc", "1..2s", "nan", "inf", "1e3s", "m1s", None, 5])
def test_what_is_not_a_duration_is_none(text: object) -> None:
    assert parse_duration(text) is None


def test_openai_headers_any_case_mapping_or_pairs() -> None:
    expected = RateInfo("openai", requests=Budget(60, 59, 1.0), tokens=Budget(100000, 98500, 360.0))
    assert parse_rate_headers(OPENAI, now=NOW) == expected
    assert parse_rate_headers([(k.upper(), v) for k, v in OPENAI.items()], now=NOW) == expected
    litellm_copy = {f"llm_provider-{k}": v for k, v in OPENAI.items()}  # LiteLLM's additional_headers
    assert parse_rate_headers(litellm_copy, now=NOW) == expected


def test_anthropic_headers_reset_is_a_time_turned_into_seconds() -> None:
    headers = {}
    for name, limit in (("requests", 50), ("tokens", 90000), ("input-tokens", 80000), ("output-tokens", 10000)):
        headers |= {f"anthropic-ratelimit-{name}-limit": str(limit),
                    f"anthropic-ratelimit-{name}-remaining": str(limit - 10),
                    f"anthropic-ratelimit-{name}-reset": _rfc3339(12)}
    info = parse_rate_headers(headers | {"retry-after": "7"}, now=NOW)
    assert info is not None and info.source == "anthropic" and info.retry_after == 7.0
    assert info.requests == Budget(50, 40, pytest.approx(12.0))
    assert info.input_tokens == Budget(80000, 79990, pytest.approx(12.0))
    assert info.output_tokens.limit == 10000 and info.tokens.remaining == 89990
    past = parse_rate_headers({"anthropic-ratelimit-tokens-reset": _rfc3339(-5)}, now=NOW)
    assert past is not None and past.tokens.reset == 0.0  # already replenished


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "12"}, 12.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"Retry-After-Ms": "1500"}, 1.5),
    ({"x-ms-retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "200", "retry-after": "3"}, 0.2),  # the precise one first, as the OpenAI SDK does
    ({"retry-after": "soon", "retry-after-ms": "x"}, None),
])
def test_retry_headers(headers: dict[str, str], seconds: float | None) -> None:
    info = parse_rate_headers(headers, now=NOW)
    if seconds is None:
        assert info is None
    else:
        assert info == RateInfo("retry-after", retry_after=pytest.approx(seconds))


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=30), usegmt=True)
    info = parse_rate_headers({"Retry-After": when}, now=NOW)
    assert info is not None and info.retry_after == pytest.approx(30.0)


def test_garbage_values_are_ignored_and_nothing_said_is_none() -> None:
    info = parse_rate_headers({"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "-3",
                               "x-ratelimit-reset-requests": "soon", "x-ratelimit-limit-tokens": "5000"}, now=NOW)
    assert info == RateInfo("openai", tokens=Budget(limit=5000))
    for nothing in ({}, None, {"content-type": "application/json"}, "x-ratelimit-limit-requests", 42, [("a",)]):
        assert parse_rate_headers(nothing, now=NOW) is None


@pytest.mark.parametrize("message, seconds", [
    ("Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): Limit 200000, Used "
     "199000, Requested 1500. Please try again in 1.234s. Visit https://platform.openai.com/account/rate-limits", 1.234),
    ("... Please try again in 20ms.", 0.02),
    ("... Please try again in 6m0s.", 360.0),
    ("Requests to the ChatCompletions_Create Operation have exceeded the rate limit. Please retry after 20 seconds.", 20.0),
    ("Rate limit reached: 500 RPM", None),
    ("", None),
])
def test_the_429_message_says_when(message: str, seconds: float | None) -> None:
    found = retry_after_from_message(message)
    assert found == (pytest.approx(seconds) if seconds is not None else None)


_HEADER_NAMES = st.sampled_from(sorted(OPENAI) + [
    "retry-after", "retry-after-ms", "x-ms-retry-after-ms", "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-output-tokens-remaining", "LLM_PROVIDER-retry-after"])
_ANYTHING = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
                         lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.dictionaries(_HEADER_NAMES | st.text(max_size=20), st.text(max_size=40) | _ANYTHING),
                 st.lists(st.tuples(_HEADER_NAMES | st.text(max_size=20), st.text(max_size=40))), _ANYTHING),
       st.floats(allow_nan=True, allow_infinity=True))
def test_header_parsing_never_raises(headers: object, now: float) -> None:
    info = parse_rate_headers(headers, now=now)
    assert info is None or isinstance(info, RateInfo)
    if info is not None:
        for budget in (info.requests, info.tokens, info.input_tokens, info.output_tokens):
            assert all(v is None or v >= 0 for v in (budget.limit, budget.remaining, budget.reset))
        assert info.retry_after is None or info.retry_after >= 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | _ANYTHING)
def test_duration_and_message_parsing_never_raise(text: object) -> None:
    for found in (parse_duration(text), retry_after_from_message(text)):
        assert found is None or found >= 0


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=10 * 24 * 3600, allow_nan=False))
def test_durations_round_trip(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-9, abs=1e-9)
    assert retry_after_from_message(f"Please try again in {text}.") == pytest.approx(seconds, rel=1e-9, abs=1e-9)
    assert parse_rate_headers({"x-ratelimit-reset-tokens": text}).tokens.reset == pytest.approx(seconds, abs=1e-9)


# ------------------------------------------------------------------------------------ the feed
def test_the_feed_publishes_to_subscribers_and_keeps_the_latest() -> None:
    feed = RateFeed()
    heard: list[RateInfo] = []
    unsubscribe = feed.subscribe(heard.append)
    assert feed.latest() is None and feed.publish_headers({"content-type": "text/plain"}) is None and not heard
    info = feed.publish_headers(OPENAI)
    assert info is not None and info.received is not None and heard == [info] and feed.latest() == info
    unsubscribe()
    feed.publish(RateInfo("retry-after", retry_after=1.0))
    assert len(heard) == 1 and feed.latest() == RateInfo("retry-after", retry_after=1.0)


def test_a_failing_subscriber_does_not_stop_the_others_or_the_reply(caplog: pytest.LogCaptureFixture) -> None:
    feed = RateFeed()
    heard: list[RateInfo] = []
    feed.subscribe(lambda info: 1 / 0)
    feed.subscribe(heard.append)
    assert feed.publish_headers(OPENAI) is not None and len(heard) == 1
    assert "subscriber failed" in caplog.text


def test_the_feed_is_thread_safe() -> None:
    feed = RateFeed()
    heard: list[RateInfo] = []
    feed.subscribe(heard.append)

    def publish(n: int) -> None:
        for i in range(200):
            feed.publish(RateInfo("openai", requests=Budget(remaining=n * 1000 + i)))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(heard) == 800 and len({i.requests.remaining for i in heard}) == 800
