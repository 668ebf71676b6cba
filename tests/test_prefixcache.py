"""The emulated provider's prompt cache follows its profile's rules; the bench's configurations
(D, A') and their cost, measured from the tokens they recorded."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from dspy.lm15 import Config, Message, Request

from toolkit.core._pricing import prices_for
from toolkit.corpora import synthetic_documents
from toolkit.execution import RateLimited
from toolkit.execution._vclock import run_virtual
from toolkit.lm import EmulatedEngine, load_profile
from toolkit.lm._prefixcache import ANTHROPIC, OPENAI, CacheRules, PrefixCache


def _request(shared_words: int, doc: str, marked_prefix: bool = False) -> Request:
    shared = "alpha " * shared_words
    last = f'[[ ## documents ## ]]\n[{{"id": "{doc}", "text": "text of {doc}"}}]'
    messages = (Message.user(shared), Message.user(last)) if marked_prefix else (Message.user(shared + last),)
    return Request(model="emulated", messages=messages, config=Config(max_tokens=10))


def _engine(rules: CacheRules, **profile: object) -> EmulatedEngine:
    return EmulatedEngine(dataclasses.replace(load_profile("hosted-api"), cache=rules, **profile))


def _cached(engine: EmulatedEngine, requests: list[Request], pause: float = 0.0) -> list[int]:
    async def calls() -> list[int]:
        out = []
        for request in requests:
            out.append((await engine.complete(request)).usage.cache_read_tokens or 0)
            await asyncio.sleep(pause)
        return out

    return run_virtual(calls())


def test_rules_round_down_to_the_minimum_and_its_increments() -> None:
    assert OPENAI.cacheable(1023) == 0 and OPENAI.cacheable(1024) == 1024 and OPENAI.cacheable(1300) == 1280
    assert ANTHROPIC.cacheable(1300) == 1300 and ANTHROPIC.cacheable(900) == 0
    cache = PrefixCache(ttl=10.0, max_entries=2)
    cache.store([(1, "a"), (2, "b"), (3, "c")], now=0.0)
    assert len(cache) == 2 and cache.lookup([(1, "b"), (2, "c")], now=5.0) == 2  # least recently used went first
    assert cache.lookup([(1, "b")], now=15.1) == 0  # refreshed at 5, gone 10 s later


def test_a_prefix_under_the_minimum_is_not_cached_one_above_it_is_and_reported() -> None:
    engine = _engine(OPENAI)
    assert _cached(engine, [_request(600, "d1"), _request(600, "d2")]) == [0, 0]
    engine = _engine(OPENAI)
    first, second = _cached(engine, [_request(1300, "d1"), _request(1300, "d2")])
    assert first == 0 and second % 128 == 0 and 1024 <= second <= 1300


def test_the_cache_expires_after_its_time_to_live_scaled_by_speed() -> None:
    rules = dataclasses.replace(OPENAI, ttl_seconds=300.0)
    assert _cached(_engine(rules), [_request(1300, "d1"), _request(1300, "d2")], pause=299.0)[1] > 0
    assert _cached(_engine(rules), [_request(1300, "d1"), _request(1300, "d2")], pause=301.0)[1] == 0
    fast = _engine(rules, speed=10.0)
    assert _cached(fast, [_request(1300, "d1"), _request(1300, "d2")], pause=31.0)[1] == 0


def test_a_marked_cache_keeps_only_the_prefix_the_client_marks() -> None:
    engine = _engine(ANTHROPIC)
    first, second = _cached(engine, [_request(1300, "d1", marked_prefix=True),
                                     _request(1300, "d2", marked_prefix=True)])
    assert first == 0 and 1290 <= second <= 1310  # all of the marked prefix, not rounded


@pytest.mark.parametrize("counts", [True, False])
def test_cached_tokens_count_towards_the_window_only_where_the_rules_say(counts: bool) -> None:
    rules = dataclasses.replace(OPENAI, counts_towards_tpm=counts)
    engine = _engine(rules, tokens_per_minute=2_000)
    requests = [_request(1300, "d1"), _request(1300, "d2")]
    if counts:
        with pytest.raises(RateLimited):
            _cached(engine, requests)
    else:
        assert _cached(engine, requests)[1] > 0


def test_a_cold_engine_bypasses_the_cache_and_the_client_discounts_only_what_the_rules_free() -> None:
    from toolkit.extraction import ExtractionSettings
    from toolkit.jobs import ExtractionService
    from toolkit.lm import resolve_lm

    uncached = EmulatedEngine(load_profile("hosted-api"), cache=False)
    assert _cached(uncached, [_request(1300, "a"), _request(1300, "b")]) == [0, 0]
    assert resolve_lm("emulated:hosted-api", prompt_cache=False).capabilities.cache is None
    settings = ExtractionSettings(relationships=False, demos="ncbi-disease-train", shots=4)
    for profile, discounted in (("hosted-api", False), ("hosted-api-cache", True)):
        service = ExtractionService(f"emulated:{profile}", settings)
        assert service.cache_discount() == 0  # nothing seen yet
        run = service.run(synthetic_documents(20, seed=1), max_docs=1, progress=False)
        assert run.counts.cached_tokens > 0 and service.cache_seen
        assert (service.cache_discount() >= 1024) is discounted


def test_bench_runs_d_and_a_warm_and_prices_each_configuration_from_its_tokens() -> None:
    from toolkit.measure import bench, bench_table

    result = bench("emulated:hosted-api", "synthetic", 1000)
    r = result.to_json()
    configs = {c["config"]: c for c in r["configs"]}
    assert list(configs) == ["A", "A_warm", "B", "C", "D", "batch_api"] and r["lost"] == 0
    prices = prices_for("gpt-4o-mini")
    assert prices is not None and r["priced_as"] == "gpt-4o-mini"
    for c in configs.values():  # the tokens each recorded, times the price map, to the cent
        batch = {k: c.get(f"batch_api_{k}", 0) for k in ("tokens_in", "tokens_out", "cached_tokens")}
        expected = ((c["tokens_in"] - c["cached_tokens"] - batch["tokens_in"] + batch["cached_tokens"]) * prices.input
                    + (c["cached_tokens"] - batch["cached_tokens"]) * prices.cached_input
                    + (c["tokens_out"] - batch["tokens_out"]) * prices.output
                    + (batch["tokens_in"] - batch["cached_tokens"]) * prices.batch_input
                    + batch["cached_tokens"] * min(prices.batch_input, prices.cached_input)
                    + batch["tokens_out"] * prices.batch_output)
        assert round(c["cost_usd"], 2) == round(expected, 2) and c["cost_usd"] == pytest.approx(expected)
        assert c["cost_per_1k_docs"] == pytest.approx(1000 * c["cost_usd"] / c["extracted"])
    assert r["speedup_d_vs_a"] > 1
    assert r["speedup_c_vs_d"] == pytest.approx(configs["D"]["seconds"] / configs["C"]["seconds"])
    assert 0 < r["d_bound_share"] <= 1.0 and r["bound_share"] <= 1.0  # D and C within the same limits
    assert {"cost_usd", "cost_per_1k_docs", "cached_tokens"} <= set(bench_table(result)[0])
    batch_api = configs["batch_api"]  # at half price: its calls through the batch API, none left for the sync path
    assert batch_api["batch_api_calls"] == batch_api["calls"]
    assert batch_api["cost_usd"] <= 0.55 * configs["C"]["cost_usd"]


def test_the_shared_prompt_comes_first_and_byte_identical_whatever_the_documents() -> None:
    from toolkit.core import Document
    from toolkit.extraction import BatchExtractor, ExtractionSettings
    from toolkit.jobs import demos_for

    settings = ExtractionSettings(relationships=False)
    extractor = BatchExtractor(settings, "packed", demos_for(settings))
    one, _ = extractor.messages([Document("a", "Aspirin treats headache.")])
    other, _ = extractor.messages([Document("b-2", "Cystic fibrosis and CFTR."), Document("c", "Tumours.")])
    assert one[:-1] == other[:-1] and one[0]["role"] == "system"  # instructions, types, worked example
    head = "".join(m["content"] for m in one[:-1])
    assert "".join(m["content"] for m in other).startswith(head) and "Aspirin" not in head
    assert one[-1]["content"].startswith("[[ ## documents ## ]]")  # the documents come after it


def test_anthropic_models_mark_the_stable_prefix_with_cache_control(no_network: list) -> None:
    from dspy._vendor.lm15.providers.anthropic import AnthropicLM

    from toolkit.lm import resolve_lm

    resolved = resolve_lm("anthropic/claude-3-5-haiku-latest")
    config = resolved.lm.kwargs["prompt_cache"]
    assert resolved.capabilities.cache == ANTHROPIC and config.prefix == "stable"
    request = Request(model="claude-3-5-haiku-latest", system="instructions and types",
                      messages=(Message.user("[[ ## documents ## ]] ..."),), config=Config(max_tokens=10, cache=config))
    payload = AnthropicLM(api_key="not-sent")._payload(request, stream=False)  # built, never sent
    assert payload["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "prompt_cache" not in resolve_lm("anthropic/claude-3-5-haiku-latest", prompt_cache=False).lm.kwargs
    assert resolve_lm("openai/gpt-4o-mini").capabilities.cache == OPENAI
    assert "prompt_cache" not in resolve_lm("openai/gpt-4o-mini").lm.kwargs  # OpenAI caches by itself
    assert resolve_lm("openai/x", api_base="http://127.0.0.1:9/v1").capabilities.cache is None
    assert not no_network
