"""What a provider's replies say about the account's limits: the header and message parsers (with
properties: they never raise, durations round-trip), the feed, and every header family carried over
real HTTP through the real client stack (``resolve_lm`` and a ``dspy`` call) to ``resolved.rates``
and to the classified error."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings, strategies as st

from toolkit.execution._ratelimits import (
    Budget,
    RateFeed,
    RateInfo,
    format_duration,
    parse_duration,
    parse_rate_headers,
    retry_after_from_message,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
OPENAI = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
          "x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": "98500",
          "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}


def _rfc3339(seconds_from_now: float) -> str:
    return datetime.fromtimestamp(NOW + seconds_from_now, UTC).isoformat().replace("+00:00", "Z")


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
    when = format_datetime(datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=30), usegmt=True)
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
     "199000, Requested 1500. Please try again in 1.234s. "
     "Visit https://platform.openai.com/account/rate-limits", 1.234),
    ("... Please try again in 20ms.", 0.02),
    ("... Please try again in 6m0s.", 360.0),
    ("Requests to the ChatCompletions_Create Operation have exceeded the rate limit. "
     "Please retry after 20 seconds.", 20.0),
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


# ------------------------------------------------------------------------------------ over HTTP
class Provider:
    """A provider on 127.0.0.1 at a free port (Starlette under uvicorn, in a thread): OpenAI's
    ``/v1/chat/completions`` and Anthropic's ``/v1/messages``; each call is answered by the next
    scripted reply (status, headers, error message), else 200 with ``headers``."""

    def __init__(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.headers: dict[str, str] = {}
        self.script: list[tuple[int, dict[str, str], str]] = []
        self.bodies: list[dict] = []
        app = Starlette(routes=[Route("/v1/chat/completions", self._openai, methods=["POST"]),
                                Route("/v1/messages", self._anthropic, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/v1"

    def _next(self) -> tuple[int, dict[str, str], str]:
        return self.script.pop(0) if self.script else (200, self.headers, "")

    @staticmethod
    def _content(body: dict) -> str:
        """The extraction's answer when asked with a schema (every document, no entity), else "hello"."""
        import json

        fmt = body.get("response_format") or (body.get("output_config") or {}).get("format") or {}
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        if not schema:
            return "hello"
        ids = schema["properties"]["results"]["items"]["properties"]["id"]["enum"]
        return json.dumps({"results": [{"id": i, "entities": []} for i in ids]})

    async def _openai(self, request):  # noqa: ANN001, ANN202
        from starlette.responses import JSONResponse

        body = await request.json()
        self.bodies.append(body)
        status, headers, message = self._next()
        if status != 200:
            error = {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
            return JSONResponse({"error": error}, status_code=status, headers=headers)
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self._content(body)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}, headers=headers)

    async def _anthropic(self, request):  # noqa: ANN001, ANN202
        from starlette.responses import JSONResponse

        body = await request.json()
        self.bodies.append(body)
        status, headers, message = self._next()
        if status != 200:
            return JSONResponse({"type": "error", "error": {"type": "rate_limit_error", "message": message}},
                                status_code=status, headers=headers)
        return JSONResponse({
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": self._content(body)}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 30,
                      "cache_creation_input_tokens": 0}}, headers=headers)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for name in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "LM_STUDIO_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("LM_STUDIO_API_KEY", "lm-studio")
    server = Provider()
    yield server
    server.close()


def _anthropic_headers(seconds: float, remaining: int = 39) -> dict[str, str]:
    reset = datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC).isoformat()
    out = {}
    for name, limit in (("requests", 50), ("tokens", 90000), ("input-tokens", 80000), ("output-tokens", 10000)):
        out |= {f"anthropic-ratelimit-{name}-limit": str(limit),
                f"anthropic-ratelimit-{name}-remaining": str(remaining),
                f"anthropic-ratelimit-{name}-reset": reset}
    return out


def _raised(call) -> Exception:  # noqa: ANN001
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def test_openai_headers_on_every_200_reach_rates_sync_async_and_through_the_service(provider: Provider) -> None:
    import asyncio

    from toolkit.core import Document
    from toolkit.extraction import ExtractionSettings
    from toolkit.jobs import ExtractionService
    from toolkit.lm import resolve_lm

    resolved = resolve_lm("openai/served-model", api_base=provider.url)
    heard: list[RateInfo] = []
    resolved.rates.subscribe(heard.append)
    provider.headers = OPENAI
    assert resolved.lm("hello") == ["hello"]
    assert heard[-1].source == "openai" and heard[-1].requests == Budget(60, 59, 1.0)
    assert heard[-1].tokens == Budget(100000, 98500, 360.0) and heard[-1].received is not None
    provider.headers = OPENAI | {"x-ratelimit-remaining-requests": "58"}
    asyncio.run(resolved.lm.acall("hello"))  # the executor's way: DSPy's async client, no thread
    assert heard[-1].requests.remaining == 58 and resolved.rates.latest() == heard[-1]
    provider.headers = OPENAI | {"x-ratelimit-remaining-requests": "57"}
    service = ExtractionService(resolved, ExtractionSettings(entity_types=("DISEASE",), relationships=False))
    result = service.extract_batch([Document("d1", "Cystic fibrosis is inherited.")])
    assert result.success_status and resolved.rates.latest().requests.remaining == 57
    assert len(heard) == len(provider.bodies) == 3


@pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning")
def test_anthropic_headers_on_a_200_reach_rates_and_the_cache_is_marked_and_counted(provider: Provider) -> None:
    from dspy.utils.usage_tracker import track_usage

    from toolkit.lm import resolve_lm

    resolved = resolve_lm("anthropic/claude-3-5-haiku-latest", api_base=provider.url)
    provider.headers = _anthropic_headers(600.0)
    with track_usage() as tracker:  # the messages as the toolkit's adapter sends them
        assert resolved.lm(messages=[{"role": "system", "content": "instructions"},
                                     {"role": "user", "content": "hello"}]) == ["hello"]
    info = resolved.rates.latest()
    assert info is not None and info.source == "anthropic" and info.input_tokens.limit == 80000
    assert info.output_tokens.remaining == 39 and 570.0 < info.requests.reset <= 600.0
    usage, = tracker.get_total_tokens().values()
    assert usage["prompt_tokens"] == 40 and usage["prompt_tokens_details"]["cached_tokens"] == 30  # as DSPy counts it
    assert provider.bodies[0]["system"][0]["cache_control"] == {"type": "ephemeral"}  # the stable prefix marked


def test_retry_after_on_an_anthropic_429(provider: Provider) -> None:
    from toolkit.execution._errors import RateLimited, classify
    from toolkit.lm import resolve_lm

    resolved = resolve_lm("anthropic/claude-3-5-haiku-latest", api_base=provider.url)
    provider.script.append((429, _anthropic_headers(30.0, remaining=0) | {"retry-after": "17"}, "Number of requests "
                            "has exceeded your rate limit"))
    error = classify(_raised(lambda: resolved.lm("hello")))
    assert isinstance(error, RateLimited) and error.retry_after == 17.0
    assert error.rate_info is not None
    assert error.rate_info.requests.remaining == 0 and error.rate_info.retry_after == 17.0
    assert resolved.rates.latest().retry_after == 17.0 and resolved.rates.latest().tokens.limit == 90000


def test_retry_after_ms_on_an_openai_429(provider: Provider) -> None:
    from toolkit.execution._errors import RateLimited, classify
    from toolkit.lm import resolve_lm

    resolved = resolve_lm("openai/served-model", api_base=provider.url)
    provider.script.append((429, OPENAI | {"x-ratelimit-remaining-requests": "0", "retry-after-ms": "1500"},
                            "Rate limit reached for requests"))
    error = classify(_raised(lambda: resolved.lm("hello")))
    assert isinstance(error, RateLimited) and error.retry_after == 1.5
    assert error.rate_info.requests == Budget(60, 0, 1.0) and resolved.rates.latest().retry_after == 1.5


def test_the_openai_429_message_with_no_retry_header(provider: Provider) -> None:
    from toolkit.execution._errors import RateLimited, classify
    from toolkit.lm import resolve_lm

    resolved = resolve_lm("openai/served-model", api_base=provider.url)
    message = ("Rate limit reached for served-model in organization org-test on tokens per min (TPM): Limit 100000, "
               "Used 99000, Requested 1500. Please try again in 6m0s. Visit https://platform.openai.com/account/rate-limits")
    provider.script.append((429, OPENAI | {"x-ratelimit-remaining-tokens": "0"}, message))
    error = classify(_raised(lambda: resolved.lm("hello")))
    assert isinstance(error, RateLimited) and error.retry_after == 360.0
    assert error.rate_info.tokens == Budget(100000, 0, 360.0) and error.rate_info.retry_after == 360.0
    assert resolved.rates.latest().retry_after is None  # the reply's headers alone do not say it


@pytest.mark.parametrize("spec, env", [("lm_studio/served-model", {}),
                                       ("openai/served-model", {"OPENAI_BASE_URL": "gateway"})],
                         ids=["litellm-provider", "openai-gateway-in-environment"])
def test_replies_through_litellm_reach_rates(provider: Provider, spec: str, env: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Providers DSPy sends through LiteLLM (and OpenAI when the environment names a gateway, as
    DSPy does): a 200's headers, sync and async, and a 429's, on the feed and the error."""
    import asyncio
    import time

    from toolkit.execution._errors import RateLimited, classify
    from toolkit.lm import resolve_lm

    for name, value in env.items():
        monkeypatch.setenv(name, provider.url if value == "gateway" else value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    resolved = resolve_lm(spec, api_base=None if env else provider.url)
    assert resolved.lm.engine == "auto"  # DSPy's own route: LiteLLM
    heard: list[RateInfo] = []
    resolved.rates.subscribe(heard.append)

    async def heard_within(seconds: float, count: int) -> None:  # LiteLLM calls back from a worker, just after
        deadline = time.monotonic() + seconds
        while len(heard) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    provider.headers = OPENAI
    assert resolved.lm("hello") == ["hello"]
    asyncio.run(heard_within(5, 1))
    assert heard[-1].tokens == Budget(100000, 98500, 360.0)

    async def call_and_hear() -> None:
        provider.headers = OPENAI | {"x-ratelimit-remaining-tokens": "97000"}
        await resolved.lm.acall("hello")
        await heard_within(5, 2)

    asyncio.run(call_and_hear())
    assert heard[-1].tokens.remaining == 97000
    provider.script.append((429, OPENAI | {"retry-after-ms": "250", "x-ratelimit-remaining-requests": "0"},
                            "slow down"))
    error = classify(_raised(lambda: resolved.lm("hello")))
    assert isinstance(error, RateLimited) and error.retry_after == 0.25 and error.rate_info.requests.remaining == 0
    asyncio.run(heard_within(5, 3))
    assert heard[-1].retry_after == 0.25 and len(heard) == len(provider.bodies) == 3


def test_a_provider_that_sends_no_rate_headers_publishes_nothing_and_works(provider: Provider) -> None:
    from toolkit.execution._errors import RateLimited, classify
    from toolkit.lm import resolve_lm

    resolved = resolve_lm("openai/served-model", api_base=provider.url)
    heard: list[RateInfo] = []
    resolved.rates.subscribe(heard.append)
    assert resolved.lm("hello") == ["hello"] and resolved.lm("hello") == ["hello"]
    provider.script.append((429, {}, "Too many requests"))
    error = classify(_raised(lambda: resolved.lm("hello")))
    assert isinstance(error, RateLimited) and error.retry_after is None and error.rate_info is None
    assert heard == [] and resolved.rates.latest() is None and len(provider.bodies) == 3


def test_provider_models_resolve_to_dspys_own_client_over_a_publishing_transport(no_network: list) -> None:
    """``openai/gpt-4o-mini`` (no ``api_base``) runs on the same engine as the tests above, aimed at
    OpenAI; the lm15 seam it rests on (``RouterConfig(transport=...)``, lm15's stdlib transports)
    fails here first if DSPy moves it."""
    from dspy._vendor.lm15.transports import StdlibAsyncTransport, StdlibTransport  # noqa: F401

    from toolkit.lm import resolve_lm
    from toolkit.lm._engine import AsyncNativeEngine, NativeEngine
    from toolkit.lm._replies import PublishingAsyncTransport, PublishingTransport

    resolved = resolve_lm("openai/gpt-4o-mini")
    engine = resolved.lm.engine
    assert isinstance(engine, NativeEngine) and isinstance(resolved.lm._async_engine_spec, AsyncNativeEngine)
    assert engine.provider == "openai-chat" and engine.api_base is None
    assert isinstance(engine.native.config.transport, PublishingTransport)
    assert isinstance(engine.async_native.config.transport, PublishingAsyncTransport)
    assert engine.native.config.transport.feed is resolved.rates
    import dspy

    for spec in ("openai/gpt-4o-mini", "openai/o3-mini", "anthropic/claude-sonnet-4-20250514"):
        ours, dspys = resolve_lm(spec).lm, dspy.LM(spec)  # what it can do is what DSPy says of the model
        for hint in ("supports_response_schema", "supports_function_calling", "supports_reasoning", "supported_params"):
            assert getattr(ours, hint) == getattr(dspys, hint), (spec, hint)
    assert engine.supports_response_schema and not no_network


def test_the_projects_emulator_is_learned_from_on_the_toolkits_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider emulator (toolkit/serve) in both flavours: what its headers say of its limits
    arrives on ``rates`` from the main job's own calls (OpenAI) and from a plain call (Anthropic)."""
    from toolkit.corpora import synthetic_documents
    from toolkit.jobs import ExtractionService
    from toolkit.lm import resolve_lm
    from toolkit.testing.serve import serve_in_thread

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with serve_in_thread("hosted-api@20", rpm=600, tpm=400000, window=60.0) as server:
        openai = resolve_lm("openai/gpt-4o-mini", api_base=server.url)
        heard: list[RateInfo] = []
        openai.rates.subscribe(heard.append)
        run = ExtractionService(openai).run(synthetic_documents(12, seed=3), max_docs=4, progress=False)
        anthropic = resolve_lm("anthropic/claude-3-5-haiku-latest", api_base=server.url)
        anthropic.lm("hello")
        calls = server.stats()["calls"]
    assert run.report.extracted == 12 and len(heard) == len(run.attempts) == calls - 1
    assert {(i.source, i.requests.limit, i.tokens.limit) for i in heard} == {("openai", 600, 400000)}
    assert [i.requests.remaining for i in heard][0] < 600 and all(0 < i.requests.reset <= 60.0 for i in heard)
    info = anthropic.rates.latest()
    assert info is not None and info.source == "anthropic" and info.requests.limit == 600
