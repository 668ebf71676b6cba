"""One pace per run: a corpus read in chunks is paced as one stream (issue 23, item 2).

The rate-limit window, the adaptive concurrency, the breaker and any pause live for the whole run,
and a chunk's batches join the calls still in flight: a chunk boundary neither resets the pace nor
drains the pipeline. Attacked on the emulated provider in real time (a profile at a speed) and in
virtual time, through the main job (`toolkit.run`), by its recorded calls.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import toolkit
from toolkit.corpora import synthetic_documents
from toolkit.execution import max_in_window
from toolkit.jobs import RunSettings
from toolkit.lm import load_profile


def write_jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs), encoding="utf-8")
    return path


def tight_profile(tmp_path: Path, rpm: int, tpm: int) -> str:
    """hosted-api with limits that bind within a few windows, as a profile file."""
    profile = dataclasses.replace(load_profile("hosted-api"), name="hosted-tight", requests_per_minute=rpm,
                                  tokens_per_minute=tpm)
    path = tmp_path / "hosted-tight.json"
    path.write_text(json.dumps(profile.to_dict()))
    return str(path)


def windows_within(attempts, window: float) -> tuple[int, int]:
    """The most requests and budget tokens the recorded calls put in any ``window`` seconds."""
    calls = [(a["at"], a["budget_tokens"]) for a in attempts.iter_rows(named=True) if a["outcome"] != "cancelled"]
    times = [t for t, _ in calls]
    return max_in_window(times, [1] * len(calls), window), max_in_window(times, [t for _, t in calls], window)


@pytest.mark.slow
def test_chunk_boundaries_keep_the_window_and_the_learned_concurrency(tmp_path: Path) -> None:
    """300 documents in chunks of 30, real time at 100x: every window of the recorded calls within
    both limits, and each chunk's first call starts while calls of the one before are in flight
    (a chunk that drained the pipeline or reset the gate would start alone)."""
    rpm, tpm = 40, 24_000
    profile = tight_profile(tmp_path, rpm, tpm)
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(300, seed=3))
    result = toolkit.run(str(corpus), lm=f"emulated:{profile}@100", store=f"sqlite:///{tmp_path / 'p.db'}",
                         settings=RunSettings(chunk_docs=30, max_docs=5), progress=False)
    summary, attempts = result.summary.to_json(), result.attempts
    assert summary["extracted"] == 300 and summary["lost"] == 0 and summary["failed"] == 0
    window = 60.0 / 100
    most_calls, most_tokens = windows_within(attempts, window)
    assert most_calls <= rpm and most_tokens <= tpm
    assert summary["rate_limits"]["tpm"] == tpm and summary["rate_limits"]["source"] == "backend"
    first_call: dict[int, tuple[float, int]] = {}  # chunk -> (time, calls in flight) of its first call
    attempts = attempts.sort("at")
    assert summary["batches"] == 60  # 6 batches of 5 a chunk, numbered on (from where the process is)
    number = [int(b.removeprefix("b").split(".")[0]) for b in attempts["batch_id"]]
    for row, n in zip(attempts.iter_rows(named=True), number):
        chunk = (n - min(number)) // 6
        first_call.setdefault(chunk, (row["at"], row["in_flight"]))
    assert sorted(first_call) == list(range(10))
    assert all(first_call[k][1] >= 2 for k in range(1, 10)), first_call


def test_the_batch_api_fallback_keeps_one_pace_across_its_jobs(tmp_path: Path) -> None:
    """Every second line of every batch fails: each job's documents go through the synchronous
    fallback, job after job, on one pace (one window, one gate) for the whole run."""
    from toolkit.jobs.batchapi import BatchApiSettings, BatchLimits, run_batch_api
    from toolkit.jobs.batchapi._emulated import EmulatedBatches, LineFaults

    rpm, tpm = 40, 24_000
    service = ExtractionService(f"emulated:{tight_profile(tmp_path, rpm, tpm)}@100",
                                ExtractionSettings(relationships=False))
    try:
        provider = EmulatedBatches(service.resolved.engine, faults=LineFaults(fail_every=2), turnaround=0.05)
        run = run_batch_api(service, synthetic_documents(120, seed=6), provider=provider, max_docs=5,
                            settings=BatchApiSettings(poll_seconds=0.02, limits=BatchLimits(max_requests=4)))
        gate = service._run.gate
    finally:
        service.close()
    assert run.report.extracted == 120
    sync = [a for a in run.attempts if not a.batch_id.startswith("batch-api:")]
    assert len(sync) >= 12 and len({a.batch_id for a in sync}) == len(sync)
    times = [a.at for a in sync]
    assert max_in_window(times, [1] * len(sync), 0.6) <= rpm
    assert max_in_window(times, [a.counts.budget_tokens for a in sync], 0.6) <= tpm
    assert [limit for _, limit in gate.history].count(1) == 1  # the gate started once, never reset by a job


@pytest.mark.slow
def test_ray_workers_keep_one_pace_across_chunks(tmp_path: Path) -> None:
    """300 documents in Ray's chunks of 50 on 2 workers, real time at 100x: every window of the
    calls of both workers within both limits (one global pace, whatever the chunk)."""
    pytest.importorskip("ray")
    rpm, tpm = 40, 24_000
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(300, seed=3))
    result = toolkit.run(str(corpus), lm=f"emulated:{tight_profile(tmp_path, rpm, tpm)}@100",
                         store=f"sqlite:///{tmp_path / 'r.db'}", progress=False,
                         settings=RunSettings(max_docs=5, runner="ray", workers=2))
    assert result.summary.extracted == 300 and result.summary.lost == 0
    most_calls, most_tokens = windows_within(result.attempts, 60.0 / 100)
    assert most_calls <= rpm and most_tokens <= tpm


def test_a_virtual_run_in_chunks_takes_the_time_of_one_chunk(tmp_path: Path) -> None:
    """3,000 documents in chunks of 300 on the virtual clock: within 2% of the same run in one
    chunk (each chunk on a clock of its own restarted at 0 while the provider's window kept its
    times, and each drained to its last batch)."""
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(3000, seed=5))
    seconds = {}
    for chunk in (300, 3000):
        result = toolkit.run(str(corpus), lm="emulated:hosted-api", store=f"sqlite:///{tmp_path / f'{chunk}.db'}",
                             settings=RunSettings(chunk_docs=chunk), progress=False)
        assert result.summary.extracted == 3000 and result.summary.lost == 0
        seconds[chunk] = result.summary.virtual_seconds
    assert abs(seconds[300] / seconds[3000] - 1) <= 0.02, seconds


# ------------------------------------------------- what a provider's replies say, adopted by the pace
import test_ratelimits  # noqa: E402
from test_ratelimits import Provider  # noqa: E402

from toolkit.extraction import ExtractionSettings  # noqa: E402
from toolkit.jobs import ExtractionService  # noqa: E402

provider = test_ratelimits.provider  # the fixture: a provider server each test starts, by its name here

OPENAI_LIMITS = {"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "150000",
                 "x-ratelimit-remaining-requests": "599", "x-ratelimit-remaining-tokens": "149000",
                 "x-ratelimit-reset-requests": "100ms", "x-ratelimit-reset-tokens": "400ms"}


def _served(provider: Provider, spec: str = "openai/served-model", docs: int = 24, **policy: str):
    """A run of ``docs`` documents, 4 a call, against ``provider`` over HTTP; (service, run)."""
    service = ExtractionService(spec, ExtractionSettings(relationships=False), api_base=provider.url)
    try:
        run = service.run(synthetic_documents(docs, seed=2), progress=False, max_docs=4)
        return service, run
    finally:
        service.close()


def test_the_pace_adopts_the_limits_openai_headers_say(provider: Provider) -> None:
    provider.headers = OPENAI_LIMITS
    service, run = _served(provider)
    assert run.report.extracted == 24 and run.counts.rate_limited == 0 and 0 < run.report.seconds < 60
    said = service.rate_limits()
    assert (said["rpm"], said["tpm"], said["window"], said["source"]) == (600, 150_000, 60.0, "learned")


def test_the_pace_adopts_the_limits_anthropic_headers_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the project's emulator speaking Anthropic's Messages API (its windows of 30 requests and
    60,000 tokens last 0.6 s at 100x: 3,000 and 6,000,000 a minute, as its headers say)."""
    from toolkit.testing.serve import serve_in_thread

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with serve_in_thread("hosted-api@100", rpm=30, tpm=60_000) as server:
        service = ExtractionService("anthropic/claude-3-5-haiku-latest", ExtractionSettings(relationships=False),
                                    api_base=server.url)
        try:
            run = service.run(synthetic_documents(24, seed=2), progress=False, max_docs=4)
        finally:
            service.close()
        stats = server.stats()
    assert run.report.extracted == 24 and stats["within_limits"]
    said = service.rate_limits()
    assert (said["rpm"], said["tpm"], said["window"], said["source"]) == (3000, 6_000_000, 60.0, "learned")


@pytest.mark.parametrize("headers, message, seconds", [
    ({"retry-after-ms": "700"}, "Rate limit reached.", 0.7),
    ({}, "Rate limit reached for served-model on requests per min (RPM): Limit 3, Used 3, Requested 1. "
         "Please try again in 650ms. Visit https://platform.openai.com/account/rate-limits.", 0.65),
    ({"retry-after": "1"}, "Rate limit reached.", 1.0),
], ids=["retry-after-ms", "message", "retry-after"])
def test_a_429_waits_what_the_provider_said_and_is_not_the_batch_s_fault(provider: Provider, headers: dict,
                                                                        message: str, seconds: float) -> None:
    provider.headers = OPENAI_LIMITS
    provider.script.append((429, {**OPENAI_LIMITS, **headers}, message))
    service, run = _served(provider)
    rejected = run.attempts[0]
    retried = next(a for a in run.attempts[1:] if a.batch_id == rejected.batch_id)
    assert rejected.error_class == "rate_limited"
    assert retried.delay_before >= seconds and retried.attempt == 1  # the 429 was not an attempt
    assert run.report.extracted == 24 and run.counts.rate_limited == 1 and run.counts.splits == 0


def test_a_provider_that_says_nothing_is_paced_by_adaptive_concurrency(provider: Provider) -> None:
    service, run = _served(provider, docs=64)
    assert run.report.extracted == 64 and service.rate_limits() is None
    assert run.report.max_concurrency_seen > 1 and run.attempts[0].in_flight == 1  # the first call went alone


def test_the_first_reply_tells_the_window_the_provider_counts_over() -> None:
    """A reply to the probe (alone in the provider's window) that says the window is empty again in
    6 s as the provider took the call in: the pace keeps a 6-second sliding window of the
    per-minute limits (its allowance free within a quarter of it); a reset of a fraction of a
    second (a provider that refills continuously) says nothing of a window: a minute, spaced."""
    from toolkit.execution import RateLimitPolicy, SlidingWindowLimiter
    from toolkit.execution._vclock import run_virtual

    def probed(policy: RateLimitPolicy, reset: float) -> SlidingWindowLimiter:
        limiter = SlidingWindowLimiter(policy)

        async def probe() -> None:
            await limiter.acquire(6_000)
            limiter.learn(5_000, 2_000_000, reset=reset, processing=0.5, received=0.7)

        run_virtual(probe())
        return limiter

    quantized = probed(RateLimitPolicy(), 6.0)
    assert (quantized.window, quantized.rpm, quantized.tpm, quantized.learned_window) == (6.0, 500, 200_000, 6.0)
    assert quantized.limits["source"] == "learned" and quantized._admitted[0][0] == pytest.approx(0.2)
    refilling = probed(RateLimitPolicy(), 0.2)
    assert (refilling.window, refilling.rpm, refilling.tpm, refilling.learned_window) == (60.0, 5_000, 2_000_000, None)
    said = probed(RateLimitPolicy.said(3_000, 2_500_000), 6.0)  # the tighter per minute, over the window
    assert (said.window, said.rpm, said.tpm, said.limits["source"]) == (6.0, 300, 200_000, "said+learned")
