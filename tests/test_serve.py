"""The provider emulator over HTTP (toolkit.testing.serve), in real time on 127.0.0.1, called through the
real client stacks: DSPy's own client (lm15) for ``openai/`` and ``anthropic/`` models, LiteLLM,
and the toolkit's resolve path driven by the extraction service. Replies, usage and cached tokens,
the rate-limit headers (read back with the client's own parser), 429s in OpenAI's and Anthropic's
words, every fault kind as the client sees it, and every sliding window of admitted calls checked
from the server's log. The files and batches endpoints are tested by tests/test_batchapi.py and
tests/test_serve_batches.py."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.execution._errors import (
    AuthenticationFailed,
    CallTimeout,
    ConnectionFailed,
    ContextLengthExceeded,
    Overloaded,
    RateLimited,
    ServerError,
    classify,
)
from toolkit.execution._ratelimits import parse_duration, parse_rate_headers
from toolkit.lm._emulated import TOKENIZER, Profile, default_gazetteer, load_profile
from toolkit.packing import get_counter
from toolkit.testing.serve import Limits, duration, serve_in_thread
from toolkit.testing.serve._window import Window

warnings.filterwarnings("ignore", category=DeprecationWarning)
PROFILE = "hosted-api@100"  # a minute lasts 0.6 s
MODEL = "openai/gpt-4o-mini"
TEXT = "Patients with breast cancer, type 2 diabetes and cystic fibrosis were followed for two years."


def _user(docs: list[dict[str, str]]) -> str:
    return "[[ ## documents ## ]]\n" + json.dumps(docs)


def _messages(system: str = "Extract the entities.", docs: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            {"role": "user", "content": _user(docs or [{"id": "d1", "text": TEXT}])}]


def _dspy(url: str, model: str = MODEL, **kwargs: Any) -> Any:
    import dspy

    return dspy.LM(model, api_base=url, api_key="x", cache=False, num_retries=0, **kwargs)


def _ask(lm: Any, messages: list[dict[str, str]], max_tokens: int = 400) -> Any:
    """One call through DSPy's own client, as the toolkit's engines make it (an lm15 request)."""
    from dspy.lm15 import Config, Message, Request

    return lm(Request(model=lm.model, messages=(Message.user(messages[-1]["content"]),), system=messages[0]["content"],
                      config=Config(max_tokens=max_tokens)))


def _litellm(url: str, messages: list[dict[str, str]] | None = None, **kwargs: Any) -> Any:
    import litellm

    return litellm.completion(model=MODEL, api_base=url, api_key="x", messages=messages or _messages(),
                              num_retries=0, max_retries=0, **{"max_tokens": 300, **kwargs})


def _entities(text: str) -> list[dict[str, str]]:
    return [{"text": t, "type": k} for t, k in default_gazetteer().find(text, 25)]


def _tokens(messages: list[dict[str, str]]) -> int:
    return get_counter(TOKENIZER).count("\n".join(m["content"] for m in messages))


# ------------------------------------------------------------------------------- pure pieces
def test_waits_are_written_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.12, 0.0004, 1, 1.5, 1.2344, 360, 3723.25, 59.9996)] == \
        ["120ms", "0ms", "1s", "1.5s", "1.234s", "6m0s", "1h2m3.25s", "1m0s"]
    assert all(abs(parse_duration(duration(s)) - round(s, 3)) < 1e-9 for s in (0.12, 1.5, 360, 3723.25))


def test_the_window_refuses_what_does_not_fit_and_says_when_it_will() -> None:
    window = Window(Limits(rpm=2, tpm=100, otpm=50, window=10))
    assert window.admit(10, 20, now=0).admitted and window.admit(10, 20, now=1).admitted
    refused = window.admit(1, 1, now=2)
    assert refused.refused.name == "requests" and refused.wait == pytest.approx(8) and refused.requested == 1
    state = window.state(2)  # said per minute, as providers say limits: a 10-second window's 100 tokens are 600
    assert (state["requests"].remaining, state["tokens"].remaining, state["output-tokens"].remaining) == (0, 240, 60)
    assert (state["requests"].limit, state["tokens"].limit, state["output-tokens"].used) == (12, 600, 240)
    assert state["requests"].reset == pytest.approx(9)  # the last charge leaves at 11
    over = window.admit(1, 31, now=10.5)  # the call at 0 has left: 20 + 31 output tokens > 50
    assert over.refused.name == "output-tokens" and over.wait == pytest.approx(0.5)
    assert window.admit(10, 5, now=10.5).admitted
    assert all(s.used == 0 and s.reset == 0 for s in window.state(25).values())
    too_large = Window(Limits(tpm=100, window=10)).admit(90, 20, now=0)
    assert too_large.refused.name == "tokens" and too_large.wait is None  # more than the whole window allows


# ------------------------------------------------------------------------- replies and usage
def test_dspy_gets_the_gazetteer_reply_its_usage_and_the_cached_prefix() -> None:
    system = "Extract the entities. " + "Worked example: the patient had asthma and gout. " * 120  # > 1,024 tokens
    with serve_in_thread(PROFILE) as server:
        lm = _dspy(server.url)
        first, second = (_ask(lm, _messages(system, [{"id": f"d{i}", "text": TEXT}])) for i in (1, 2))
        server.reset()  # a fresh server: its cache is empty again
        assert _ask(lm, _messages(system)).usage.cache_read_tokens == 0
    assert json.loads(second.text) == {"results": [{"id": "d2", "entities": _entities(TEXT), "relationships": []}]}
    messages = _messages(system, [{"id": "d1", "text": TEXT}])
    assert first.usage.input_tokens == _tokens(messages) and first.usage.cache_read_tokens == 0
    assert first.usage.output_tokens == get_counter(TOKENIZER).count(first.text)
    rules = load_profile(PROFILE).cache_rules
    shared = get_counter(TOKENIZER).count(system)  # the prompts agree up to the documents
    assert rules.cacheable(shared - 128) <= second.usage.cache_read_tokens <= shared
    assert second.usage.cache_read_tokens % 128 == 0


def test_a_call_takes_the_profiles_time_and_many_run_at_once_within_its_slots() -> None:
    slow = Profile("slow", overhead_seconds=0.4, prompt_tokens_per_second=1e9, output_tokens_per_second=1e9)

    async def burst(url: str, n: int) -> float:
        start = time.perf_counter()
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "m", "messages": _messages(), "max_tokens": 100}
            replies = await asyncio.gather(*(client.post(f"{url}/chat/completions", json=body) for _ in range(n)))
        assert all(r.status_code == 200 for r in replies)
        return time.perf_counter() - start

    with serve_in_thread(slow) as server:
        assert 0.4 <= asyncio.run(burst(server.url, 1)) < 2.0
        assert asyncio.run(burst(server.url, 20)) < 3.0  # one after another would take 8 s
    with serve_in_thread(replace(slow, parallel_slots=2)) as server:
        assert asyncio.run(burst(server.url, 6)) >= 3 * 0.4  # two at a time


# --------------------------------------------------------------------------------- headers
def test_litellm_sees_openais_headers_counting_down_and_charged_at_admission() -> None:
    with serve_in_thread(PROFILE, rpm=50, tpm=20_000, window=60) as server:
        replies = [_litellm(server.url, max_tokens=300) for _ in range(3)]
    charge = _tokens(_messages()) + 300  # the prompt plus max_tokens, whatever the reply used
    infos = [parse_rate_headers(r._hidden_params["additional_headers"]) for r in replies]
    assert all(i.source == "openai" and i.requests.limit == 50 and i.tokens.limit == 20_000 for i in infos)
    assert [i.requests.remaining for i in infos] == [49, 48, 47]
    assert [i.tokens.remaining for i in infos] == [20_000 - charge * n for n in (1, 2, 3)]
    assert all(0 < i.requests.reset <= 60 and 0 < i.tokens.reset <= 60 for i in infos)
    assert all(r.usage.completion_tokens < 300 and r._hidden_params["additional_headers"]["llm_provider-x-request-id"]
               for r in replies)


def test_a_burst_above_the_limit_gets_openais_429s_with_headers_and_no_retry_after() -> None:
    import litellm

    with serve_in_thread(PROFILE, rpm=3, window=60) as server:
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(lambda _: _catch(lambda: _litellm(server.url)), range(6)))
        stats = server.stats()
    refused = [o for o in outcomes if isinstance(o, litellm.RateLimitError)]
    assert len(refused) == 3 and stats["rate_limited"] == 3 and stats["answered"] == 3
    for exc in refused:
        headers = exc.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "3"
        assert "retry-after" not in headers and "retry-after-ms" not in headers
        error = exc.response.json()["error"]
        found = re.fullmatch(r"Rate limit reached for gpt-4o-mini in organization org-emulated on requests per min "
                             r"\(RPM\): Limit 3, Used 3, Requested 1\. Please try again in (\S+)\. Visit .*",
                             error["message"])
        assert found and 0 < parse_duration(found.group(1)) <= 60
        assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
        assert isinstance(classify(exc), RateLimited)


def _catch(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the test looks at what came back
        return exc


@pytest.mark.parametrize("option", ["retry_after", "retry_after_ms"])
def test_retry_after_is_sent_only_when_asked(option: str) -> None:
    with serve_in_thread(PROFILE, rpm=1, window=60, **{option: True}) as server:
        _litellm(server.url)
        exc = _catch(lambda: _litellm(server.url))
    headers = exc.response.headers
    said = float(headers["retry-after"]) if option == "retry_after" else int(headers["retry-after-ms"]) / 1000
    assert ("retry-after" in headers) == (option == "retry_after") and 0 < said <= 60
    assert classify(exc).retry_after == pytest.approx(said, abs=1.0)


def test_the_token_limit_refuses_by_tokens_and_a_request_larger_than_the_window() -> None:
    with serve_in_thread(PROFILE, tpm=1000, window=60) as server:
        url = f"{server.url}/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": _messages(), "max_tokens": 600}
        first, second = httpx.post(url, json=body), httpx.post(url, json=body)
        huge = httpx.post(url, json={**body, "max_completion_tokens": 5000})
    charge = _tokens(_messages()) + 600
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == str(1000 - charge)
    error = second.json()["error"]
    assert second.status_code == 429 and error["type"] == "tokens"
    assert f"(TPM): Limit 1000, Used {charge}, Requested {charge}. Please try again in" in error["message"]
    assert huge.status_code == 429 and "Request too large" in huge.json()["error"]["message"]
    assert "try again" not in huge.json()["error"]["message"]


# ----------------------------------------------------------------------- the windows, checked
def test_every_window_of_admitted_calls_stays_within_both_limits() -> None:
    rpm, tpm, window = 8, 6000, 0.5

    async def client(url: str, calls: int, seen: list[int]) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while calls:
                reply = await http.post(f"{url}/chat/completions", json={"model": "m", "messages": _messages(),
                                                                          "max_tokens": 500})
                seen.append(reply.status_code)
                calls -= reply.status_code == 200
                if reply.status_code == 429:
                    await asyncio.sleep(0.05)

    async def main(url: str, seen: list[int]) -> None:
        await asyncio.gather(*(client(url, 5, seen) for _ in range(8)))

    seen: list[int] = []
    with serve_in_thread(PROFILE, rpm=rpm, tpm=tpm, window=window) as server:
        asyncio.run(main(server.url, seen))
        stats = server.stats()
    admitted = [e for e in stats["log"] if e["admitted"]]
    assert len(admitted) == 40 and stats["rate_limited"] == seen.count(429) > 0
    worst_requests = worst_tokens = 0
    for last in admitted:  # every window that ends at an admission
        inside = [e for e in admitted if last["at"] - window < e["at"] <= last["at"]]
        worst_requests = max(worst_requests, len(inside))
        worst_tokens = max(worst_tokens, sum(e["input"] + e["output"] for e in inside))
    assert worst_requests <= rpm and worst_tokens <= tpm and stats["within_limits"]
    assert (worst_requests, worst_tokens) == (stats["peak"]["requests"], stats["peak"]["tokens"])
    assert worst_requests == rpm or worst_tokens > tpm - (_tokens(_messages()) + 500)  # the limit was reached


# -------------------------------------------------------------------------------- the toolkit
def test_the_toolkit_path_extracts_every_document_as_the_in_process_emulation_does() -> None:
    from toolkit.corpora import synthetic_documents
    from toolkit.jobs import ExtractionService
    from toolkit.lm import resolve_lm

    docs = synthetic_documents(20, seed=4)
    with serve_in_thread("hosted-api@20") as server:
        run = ExtractionService(resolve_lm(MODEL, api_base=server.url)).run(docs, max_docs=10, progress=False)
        stats = server.stats()
    local = ExtractionService("emulated:hosted-api").run(docs, max_docs=10, progress=False)
    assert run.report.extracted == 20
    assert {o.id: o.entities for o in run.report.outcomes} == {o.id: o.entities for o in local.report.outcomes}
    assert (run.counts.tokens_in, run.counts.tokens_out) == (local.counts.tokens_in, local.counts.tokens_out)
    assert stats["calls"] == stats["answered"] == len(run.attempts) and stats["within_limits"]


# ------------------------------------------------------------------------------------ faults
_FAULTS = [("server_error", ServerError), ("overloaded", Overloaded), ("timeout", CallTimeout),
           ("malformed_body", ServerError), ("drop", ConnectionFailed), ("unauthorized", AuthenticationFailed),
           ("context_length", ContextLengthExceeded), ("rate_limit", RateLimited),
           ("rate_limit_retry_after", RateLimited)]



@pytest.fixture(scope="module")
def fault_server():  # noqa: ANN201
    with serve_in_thread(PROFILE, hold_seconds=2.0) as server:
        _post(server.url)  # warm: the tokenizer and the gazetteer are loaded
        yield server


@pytest.mark.parametrize(("client", "kind", "expected"), [
    pytest.param(client, kind, expected, id=f"{client}-{kind}")
    for client in ("dspy", "litellm", "anthropic") for kind, expected in _FAULTS])
def test_each_fault_reaches_the_client_as_its_error_class(fault_server, client: str, kind: str, expected: type) -> None:  # noqa: ANN001
    fault_server.reset()
    fault_server.queue_fault(kind)
    calls = {"dspy": lambda: _ask(_dspy(fault_server.url, timeout=1.5), _messages()),  # the server holds a timeout 2 s
             "litellm": lambda: _litellm(fault_server.url, timeout=1.5),
             "anthropic": lambda: _ask(_dspy(fault_server.url, "anthropic/claude-3-5-haiku-latest", timeout=1.5),
                                       _messages())}
    error = classify(_catch(calls[client]))
    if kind != "timeout":  # a held call is logged when the server lets it go
        assert fault_server.stats()["faults"].get(kind) == 1
    assert type(error) is expected
    if kind.startswith("rate_limit"):
        assert error.retry_after == (pytest.approx(0.05) if kind.endswith("after") else None)


def test_faults_by_rate_and_content_faults_damage_the_reply() -> None:
    with serve_in_thread(PROFILE, faults={"server_error": 0.5}, seed=3) as server:
        statuses = [_post(server.url).status_code for _ in range(30)]
        assert 5 < statuses.count(500) < 25 and server.stats()["faults"] == {"server_error": statuses.count(500)}
    with serve_in_thread(PROFILE) as server:
        server.queue_fault("truncated")
        server.queue_fault("malformed")
        cut, malformed, good = (_post(server.url).json() for _ in range(3))
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 300
    assert not malformed["choices"][0]["message"]["content"].startswith("{")
    assert json.loads(good["choices"][0]["message"]["content"])["results"][0]["entities"] == _entities(TEXT)


def _post(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions",
                      json={"model": "m", "messages": _messages(), "max_tokens": 300, **body})


def test_the_admin_endpoints_reset_refuse_unknown_faults_and_routes_answer_404() -> None:
    with serve_in_thread(PROFILE, rpm=2, window=60) as server:
        _post(server.url), _post(server.url)
        assert _post(server.url).status_code == 429
        server.reset()
        reply = _post(server.url)
        assert reply.status_code == 200 and reply.headers["x-ratelimit-remaining-requests"] == "1"
        assert server.stats()["calls"] == 1
        admin = server.url.removesuffix("/v1") + "/_admin/faults"
        assert httpx.post(admin, json={"kind": "bogus"}).status_code == 400
        assert httpx.post(admin, json={"kind": "503", "count": 2}).json()["queued"][1]["kind"] == "overloaded"
        missing = httpx.get(f"{server.url}/nothing")
        assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
        assert httpx.post(f"{server.url}/chat/completions", content=b"{not json").status_code == 400
        assert httpx.post(f"{server.url}/files", files={"file": ("a.jsonl", b"{}")}).status_code == 404  # no store


# --------------------------------------------------------------------------------- Anthropic
def test_anthropic_messages_answer_dspys_client_with_headers_and_429s() -> None:
    with serve_in_thread(PROFILE, rpm=2, window=60) as server:
        lm = _dspy(server.url, "anthropic/claude-3-5-haiku-latest")
        reply = _ask(lm, _messages())
        content = [{"type": "text", "text": _user([{"id": "x", "text": TEXT}])}]
        raw = httpx.post(f"{server.url}/messages", json={"model": "claude", "max_tokens": 200, "system": "Extract.",
                                                          "messages": [{"role": "user", "content": content}]})
        refused = _catch(lambda: _ask(lm, _messages()))
        wall = time.time()
        throttled = httpx.post(f"{server.url}/messages", json={"model": "claude", "max_tokens": 200,
                                                                "messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(reply.text)["results"][0]["entities"] == _entities(TEXT)
    assert reply.usage.input_tokens == _tokens(_messages()) and reply.usage.cache_read_tokens == 0
    body = raw.json()
    assert (body["type"], body["stop_reason"], body["content"][0]["type"]) == ("message", "end_turn", "text")
    assert body["usage"]["input_tokens"] + body["usage"]["cache_read_input_tokens"] > 0
    for name in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = datetime.fromisoformat(raw.headers[f"anthropic-ratelimit-{name}-reset"]).timestamp()
        assert raw.headers[f"anthropic-ratelimit-{name}-limit"] and 0 < reset - wall <= 60
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0" and raw.headers["request-id"]
    assert parse_rate_headers(raw.headers).source == "anthropic"
    assert isinstance(classify(refused), RateLimited) and 0 < classify(refused).retry_after <= 60
    assert throttled.status_code == 429 and 0 < int(throttled.headers["retry-after"]) <= 60
    assert throttled.json()["error"]["type"] == "rate_limit_error" and throttled.json()["type"] == "error"
    assert "of 2 requests per minute" in throttled.json()["error"]["message"]


# ------------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_the_serve_command_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--profile", PROFILE, "--port", "0",
                                "--rpm", "7", "--state", str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1])
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", line).group(0)
        reply = _post(url)
        # --rpm is per window (a minute at the profile's 100x: 0.6 s); the headers say it per minute
        assert reply.status_code == 200 and reply.headers["x-ratelimit-limit-requests"] == "700"
        assert httpx.post(f"{url}/files", files={"file": ("a.jsonl", b"{}")}).json()["object"] == "file"
        assert httpx.get(f"{url}/batches").json()["object"] == "list"  # and Anthropic's Message Batches:
        assert httpx.get(f"{url}/messages/batches").json() == {"data": [], "has_more": False, "first_id": None,
                                                                "last_id": None}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0


@pytest.mark.slow
def test_the_serve_command_stops_on_sigterm_where_sigint_is_ignored() -> None:
    """A server started in the background by a shell ignores SIGINT (it inherits SIG_IGN, and
    Python then installs no Ctrl-C handler): SIGTERM stops it as Ctrl-C does, exit 0."""
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--profile", PROFILE, "--port", "0"],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", process.stdout.readline()).group(0)
        assert _post(url).status_code == 200
        process.send_signal(signal.SIGINT)  # ignored, as in a background job
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        process.kill()
