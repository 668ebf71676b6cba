"""Executor under fault injection, in virtual time: exact delays, bounds, limits and outcomes."""

from __future__ import annotations

import asyncio
import time

import pytest

from toolkit import BatchExtractionResult, Document, Entity, Packer, PackingSettings
from toolkit.corpora import synthetic_documents
from toolkit.execution import Executor, RunMetrics, RunStopped, extract_batch_with_retry, max_in_window
from toolkit.execution._errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    MalformedReply,
    RateLimited,
    ServerError,
    TruncatedReply,
)
from toolkit.execution._policies import (
    BreakerPolicy,
    ConcurrencyPolicy,
    ExecutionPolicy,
    RateLimitPolicy,
)
from toolkit.execution._vclock import run_virtual
from toolkit.testing import FakeProvider, Faults, default_policy, run_chaos


def make_batches(n_docs: int, per_batch: int, tokens: int = 100):
    docs = [Document(f"d{i:04d}", f"Text of document {i} mentions GENE{i}.") for i in range(n_docs)]
    settings = PackingSettings(max_docs=per_batch)
    return docs, Packer(settings).pack(docs, token_counts=[tokens] * n_docs).batches


def reply(batch, only=None, extra=()):
    ids = [i for i in batch.document_ids if only is None or i in only]
    entities = {i: [Entity(f"GENE{i[1:]}", "GENE", i)] for i in ids}
    entities.update({e: [] for e in extra})
    return BatchExtractionResult(batch.batch_id, entities)


class Scripted:
    """Async provider: the n-th call does ``script[n]`` (an exception to raise, or a callable on the
    batch returning a result); after the script, good replies. ``latency`` virtual seconds each."""

    def __init__(self, script=(), latency: float = 1.0):
        self.script = list(script)
        self.latency = latency
        self.calls: list[tuple[float, tuple[str, ...]]] = []

    async def __call__(self, batch):
        self.calls.append((asyncio.get_running_loop().time(), tuple(batch.document_ids)))
        step = self.script[len(self.calls) - 1] if len(self.calls) <= len(self.script) else None
        await asyncio.sleep(self.latency)
        if isinstance(step, BaseException):
            raise step
        return step(batch) if callable(step) else reply(batch)


def policy(**changes) -> ExecutionPolicy:
    base = dict(concurrency=ConcurrencyPolicy(max=1), seed=1, breaker=BreakerPolicy(threshold=1000))
    base.update(changes)
    return ExecutionPolicy(**base)


def gaps(calls, latency):
    return [b[0] - (a[0] + latency) for a, b in zip(calls, calls[1:])]


def test_backoff_waits_2_4_8_seconds_plus_bounded_jitter():
    _, batches = make_batches(4, 4)
    provider = Scripted([ServerError("500")] * 3)
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.extracted == 4 and report.retries == 3
    for waited, base in zip(gaps(provider.calls, 1.0), (2, 4, 8)):
        assert base <= waited <= base * 1.25 + 1e-6


def test_retry_after_is_honoured_exactly():
    _, batches = make_batches(2, 2)
    provider = Scripted([RateLimited("429", retry_after=7.0)])
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.extracted == 2
    assert gaps(provider.calls, 1.0) == [pytest.approx(7.0)]


def test_401_stops_the_run_after_one_call():
    _, batches = make_batches(200, 8)
    provider = Scripted([AuthenticationFailed("401 invalid key")] * 1000)
    executor = Executor(provider, policy(concurrency=ConcurrencyPolicy(max=8)), progress=False)
    with pytest.raises(RunStopped, match="401") as stopped:
        executor.run(batches, virtual=True)
    report = stopped.value.report
    assert len(provider.calls) == 1 and report.calls == 1
    assert report.pending == 200 and report.failed == 0  # resumable, not failed


def test_a_batch_of_8_failing_every_time_costs_at_most_24_calls():
    _, batches = make_batches(8, 8)
    provider = Scripted([ServerError("500")] * 100)
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.calls == len(provider.calls) == 24
    assert report.failed == 8 and report.extracted == 0
    assert all(o.reason and "server_error" in o.reason for o in report.outcomes)
    assert report.to_batch_result().per_document_entities == {}  # failed, never "zero entities"


def test_split_halves_after_last_retry_and_single_documents_fail_with_their_error():
    _, batches = make_batches(2, 2)
    provider = Scripted([MalformedReply("bad json")] * 4 + [lambda b: reply(b)] + [MalformedReply("bad")] * 4)
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert [c[1] for c in provider.calls[4:6]] == [("d0000",), ("d0001",)]
    assert report.counts.splits == 1
    assert [o.status for o in report.outcomes] == ["extracted", "failed"]
    assert "malformed" in report.outcomes[1].reason


def test_context_length_splits_at_once_without_retrying_whole():
    _, batches = make_batches(8, 8)
    provider = Scripted([ContextLengthExceeded("too long")])
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.extracted == 8 and report.retries == 0
    assert [len(c[1]) for c in provider.calls] == [8, 4, 4]


def test_single_document_over_the_context_fails_with_a_clear_reason():
    _, batches = make_batches(1, 1)
    executor = Executor(Scripted([ContextLengthExceeded("too long")]), policy(), progress=False)
    report = executor.run(batches, virtual=True)
    assert report.failed == 1 and "too long for the model" in report.outcomes[0].reason


def test_partial_reply_keeps_answers_and_resends_only_missing_documents():
    _, batches = make_batches(6, 6)
    provider = Scripted([lambda b: reply(b, only={"d0000", "d0002", "d0004"})])
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.extracted == 6 and report.counts.requeued == 3
    assert provider.calls[1][1] == ("d0001", "d0003", "d0005")


def test_extra_ids_are_dropped_and_counted():
    _, batches = make_batches(3, 3)
    provider = Scripted([lambda b: reply(b, extra=("ghost-1", "ghost-2"))])
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.counts.extra_ids == 2 and report.extracted == 3
    assert {o.id for o in report.outcomes} == {"d0000", "d0001", "d0002"}


def test_truncated_and_malformed_replies_are_retried():
    _, batches = make_batches(3, 3)
    provider = Scripted([TruncatedReply("cut"), MalformedReply("bad")])
    report = Executor(provider, policy(), progress=False).run(batches, virtual=True)
    assert report.extracted == 3 and report.retries == 2 and len(provider.calls) == 3


def test_each_call_records_its_reply_validation_counts():
    from toolkit.core import Counts

    _, batches = make_batches(2, 2)

    async def provider(batch):
        return BatchExtractionResult(batch.batch_id, {d: [] for d in batch.document_ids},
                                     validation=Counts(leaks=2, loops_ended=1))

    metrics = RunMetrics()
    report = Executor(provider, policy(), metrics, progress=False).run(batches, virtual=True)
    assert [(a.counts.leaks, a.counts.loops_ended, a.counts.documents_ok, a.counts.calls)
            for a in metrics.attempts] == [(2, 1, 2, 1)]
    assert report.counts == metrics.attempts[0].counts  # the run's counts: the sum of its calls'


def test_call_timeout_is_a_retryable_error():
    _, batches = make_batches(2, 2)
    slow_then_fast = Scripted(latency=1.0)

    async def provider(batch):
        if not slow_then_fast.calls:
            slow_then_fast.calls.append((0.0, ()))
            await asyncio.sleep(100)
        return await slow_then_fast(batch)

    metrics = RunMetrics()
    report = Executor(provider, policy(call_timeout=10.0), metrics, progress=False).run(batches, virtual=True)
    assert report.extracted == 2
    assert metrics.attempts[0].error_class == "timeout"
    assert metrics.attempts[0].seconds == pytest.approx(10.0)


def test_circuit_breaker_pauses_probes_and_stops_leaving_documents_pending():
    _, batches = make_batches(40, 10)
    provider = Scripted([ServerError("503 down")] * 1000)
    breaker = BreakerPolicy(threshold=5, cooldown=10.0, max_trips=2)
    executor = Executor(provider, policy(breaker=breaker, concurrency=ConcurrencyPolicy(max=4)), progress=False)
    with pytest.raises(RunStopped, match="provider failed") as stopped:
        executor.run(batches, virtual=True)
    report = stopped.value.report
    assert report.failed == 0 and report.pending == 40
    assert report.breaker_trips == 3
    times = [t for t, _ in provider.calls]
    assert len(times) <= 5 + 4 + 2  # threshold, a few in flight, then one probe per cooldown
    assert times[-1] - times[-2] >= 20.0 - 1e-6  # second cooldown doubled


def test_results_keep_input_order_under_concurrency():
    docs, batches = make_batches(60, 5)

    async def jittery(batch):
        await asyncio.sleep(1 + (hash(batch.batch_id) % 7))
        return reply(batch)

    report = Executor(jittery, policy(concurrency=ConcurrencyPolicy(max=4)), progress=False).run(batches, virtual=True)
    assert [o.id for o in report.outcomes] == [d.id for d in docs]
    assert all(e.source_document_id == o.id for o in report.outcomes for e in o.entities)


def test_concurrency_never_exceeds_its_limit():
    _, batches = make_batches(100, 5)
    metrics = RunMetrics()
    report = Executor(Scripted(latency=5.0), policy(concurrency=ConcurrencyPolicy(max=3)), metrics,
                      progress=False).run(batches, virtual=True)
    assert report.max_concurrency_seen == 3
    assert max(a.in_flight for a in metrics.attempts) == 3


def test_requests_and_tokens_per_minute_never_exceed_their_limits():
    _, batches = make_batches(200, 4, tokens=500)
    metrics = RunMetrics()
    provider = FakeProvider(requests_per_minute=30, tokens_per_minute=40_000, seed=3)
    rate = RateLimitPolicy(requests_per_minute=30, tokens_per_minute=40_000)
    report = Executor(provider, policy(rate=rate, concurrency=ConcurrencyPolicy(max=16)), metrics,
                      progress=False).run(batches, virtual=True)
    assert report.extracted == 200 and provider.rejected == 0
    starts = [a.started for a in metrics.attempts]
    tokens = [a.counts.budget_tokens for a in metrics.attempts]
    assert max_in_window(starts, [1] * len(starts), 60.0) <= 30
    assert 40_000 - tokens[0] < max_in_window(starts, tokens, 60.0) <= 40_000  # within a batch of it, never over


def test_adaptive_concurrency_decreases_on_429_and_recovers():
    _, batches = make_batches(1000, 4)

    async def provider(batch):
        now = asyncio.get_running_loop().time()
        await asyncio.sleep(2.0)
        if 30.0 <= now < 40.0:
            raise RateLimited("429")
        return reply(batch)

    adaptive = ConcurrencyPolicy(mode="adaptive", max=8, initial=1)
    report = Executor(provider, policy(concurrency=adaptive), progress=False).run(batches, virtual=True)
    history = report.concurrency_history
    before = max(limit for t, limit in history if t < 30.0)
    during = [limit for t, limit in history if 30.0 <= t < 45.0]
    after = max(limit for t, limit in history if t >= 45.0)
    assert before == 8 and min(during) <= 2 and after == 8
    assert report.extracted == 1000


def test_cancellation_leaves_no_document_in_an_unknown_state():
    _, batches = make_batches(50, 5)
    executor = Executor(Scripted(latency=10.0), policy(concurrency=ConcurrencyPolicy(max=2)), progress=False)

    async def main():
        task = asyncio.create_task(executor.run_async(batches))
        await asyncio.sleep(35.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    report = executor.report
    assert report.stop_reason == "cancelled" and report.duplicated == 0
    statuses = {o.status for o in report.outcomes}
    assert statuses <= {"extracted", "pending"} and report.extracted > 0 and report.pending > 0
    assert report.extracted + report.pending == 50


def test_sync_extract_functions_run_in_threads():
    _, batches = make_batches(12, 3)
    report = Executor(lambda b: reply(b), policy(concurrency=ConcurrencyPolicy(max=3)), progress=False).run(batches)
    assert report.extracted == 12


def test_progress_callback_sees_every_document():
    _, batches = make_batches(10, 5)
    seen = []
    Executor(Scripted(), policy(), progress=seen.append).run(batches, virtual=True)
    assert len(seen) == 10 and seen[-1].extracted == 10


def test_extract_batch_with_retry_contract():
    docs = [Document(f"c{i}", f"text {i}") for i in range(4)]
    calls = []

    def flaky(documents):
        calls.append([d.id for d in documents])
        if len(calls) == 1:
            raise ConnectionError("reset by peer")
        return BatchExtractionResult("x", {d.id: [Entity("text", "T", d.id)] for d in documents})

    result = extract_batch_with_retry(docs, flaky, max_retries=3, retry_delays=(0.01,))
    assert result.success_status and result.retry_count == 1 and len(calls) == 2
    assert result.get_entity_count_by_document() == {f"c{i}": 1 for i in range(4)}

    def broken(documents):
        raise ValueError("not json")

    failed = extract_batch_with_retry(docs, broken, max_retries=1, retry_delays=(0.0,), virtual=True)
    assert not failed.success_status and failed.per_document_entities == {}
    assert set(failed.failed_document_ids) == {d.id for d in docs}


@pytest.mark.slow
def test_chaos_10000_documents_transient_faults_lose_nothing():
    documents = synthetic_documents(10_000, seed=5)
    batches = Packer(PackingSettings()).pack(documents).batches
    provider = FakeProvider(Faults.transient(0.2), requests_per_minute=500, tokens_per_minute=200_000, seed=5)
    start = time.perf_counter()
    chaos = run_chaos(batches, provider, default_policy(seed=5))
    summary, stopped = chaos.summary, chaos.stopped
    assert stopped is None
    assert summary["lost"] == summary["duplicated"] == summary["failed"] == 0
    assert summary["extracted"] == 10_000
    assert summary["max_rpm_seen"] <= 500 and summary["max_tpm_seen"] <= 200_000
    assert summary["max_concurrency_seen"] <= 16
    assert summary["virtual_seconds"] > 50 * (time.perf_counter() - start)  # virtual time, not real


# ------------------------------------------------------------------------------ hostile faults
def test_a_short_outage_at_high_concurrency_is_one_trip_not_a_stop():
    """16 calls in flight fail together during a 10 s outage: that is one trip of the breaker (the
    in-flight failures tell nothing new), the probe after the cooldown succeeds, nothing is lost."""
    _, batches = make_batches(400, 5)

    async def outage(batch):
        now = asyncio.get_running_loop().time()
        await asyncio.sleep(2.0)
        if 5.0 <= now < 15.0:
            raise ServerError("502 bad gateway")
        return reply(batch)

    breaker = BreakerPolicy(threshold=10, cooldown=30.0, max_trips=3)
    report = Executor(outage, policy(breaker=breaker, concurrency=ConcurrencyPolicy(max=16)),
                      progress=False).run(batches, virtual=True)
    assert report.stop_reason is None and report.extracted == 400
    assert report.breaker_trips == 1


def test_documents_a_reply_never_names_fail_with_what_happened():
    """A document left out of every reply fails with "missing from the reply" and the reply's own
    account (here: it named an id that was not asked for), also after the batch was split."""
    _, batches = make_batches(4, 4)

    async def renames(batch):
        await asyncio.sleep(1.0)
        result = reply(batch, only=[i for i in batch.document_ids if i != "d0002"])
        if "d0002" in batch.document_ids:
            result.error_message = "no usable record for ['d0002']; the reply named ids that were not asked for: ['d2']"
        return result

    report = Executor(renames, policy(), progress=False).run(batches, virtual=True)
    failed = {o.id: o.reason for o in report.outcomes if o.status == "failed"}
    assert list(failed) == ["d0002"] and report.extracted == 3
    assert "missing from the reply" in failed["d0002"] and "not asked for: ['d2']" in failed["d0002"]
    assert "no attempt made" not in failed["d0002"]


def test_an_outcome_that_cannot_be_kept_ends_the_run_with_that_error_and_leaves_the_document_pending():
    """The store failing is not the provider's fault, nor a stop: nothing more is sent and the run
    ends with the store's error (the main job marks its run failed with it)."""
    _, batches = make_batches(6, 2)
    kept: list[str] = []

    def keep(outcome):
        if len(kept) == 3:
            raise OSError("disk full")
        kept.append(outcome.id)

    executor = Executor(Scripted(), policy(), progress=False, on_outcome=keep)
    with pytest.raises(OSError, match="disk full"):
        executor.run(batches, virtual=True)
    report = executor.report
    assert report.extracted == 3 and report.pending == 3 and report.failed == 0 and report.calls == 2


def test_an_unsendable_document_fails_alone_and_the_batch_goes_on():
    from toolkit.execution._errors import Unsendable

    _, batches = make_batches(8, 8)

    async def refuses_d3(batch):
        await asyncio.sleep(1.0)
        if "d0003" in batch.document_ids:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return reply(batch)

    metrics = RunMetrics()
    report = Executor(refuses_d3, policy(), metrics, progress=False).run(batches, virtual=True)
    failed = {o.id: o.reason for o in report.outcomes if o.status == "failed"}
    assert list(failed) == ["d0003"] and failed["d0003"].startswith("cannot be sent: unsendable")
    assert report.extracted == 7 and report.retries == 0 and report.breaker_trips == 0
    assert Unsendable.kind in {a.error_class for a in metrics.attempts}


def test_an_exhausted_quota_stops_the_run_after_one_call():
    class QuotaError(Exception):
        status_code = 429

    _, batches = make_batches(20, 5)
    provider = Scripted([QuotaError("You exceeded your current quota")] * 100)
    with pytest.raises(RunStopped, match="quota") as stopped:
        Executor(provider, policy(concurrency=ConcurrencyPolicy(max=4)), progress=False).run(batches, virtual=True)
    assert len(provider.calls) == 1 and stopped.value.report.pending == 20


# ------------------------------------------------------------------------------- context, reuse
def test_the_caller_s_context_reaches_sync_extract_functions_also_under_a_running_loop():
    """``with dspy.context(lm=...)`` around a run must hold inside the worker threads that run a
    sync ``extract_fn``, also when the run starts where a loop is running (Jupyter)."""
    import dspy

    marker = dspy.LM("openai/context-marker")
    seen: list[object] = []

    def extract(batch):
        seen.append(dspy.settings.lm)
        return reply(batch)

    with dspy.context(lm=marker):
        Executor(extract, policy(), progress=False).run(make_batches(2, 2)[1])

        async def in_a_notebook():
            return Executor(extract, policy(), progress=False).run(make_batches(2, 2)[1])

        asyncio.run(in_a_notebook())
    assert len(seen) == 2 and all(lm is marker for lm in seen)


def test_one_executor_runs_twice_at_once():
    _, first = make_batches(20, 4)
    docs = [Document(f"e{i}", f"GENE{i}") for i in range(12)]
    second = Packer(PackingSettings(max_docs=3)).pack(docs, token_counts=[10] * 12).batches
    executor = Executor(Scripted(latency=1.0), policy(concurrency=ConcurrencyPolicy(max=2)), progress=False)

    async def both():
        return await asyncio.gather(executor.run_async(first), executor.run_async(second))

    a, b = run_virtual(both())
    assert (a.extracted, b.extracted) == (20, 12) and (a.calls, b.calls) == (6, 5)  # each run's first call: one doc
    assert {o.id for o in a.outcomes}.isdisjoint({o.id for o in b.outcomes})


def test_an_unexpected_error_in_a_batch_fails_the_run_instead_of_vanishing():
    """What no policy handles (a bug in an outcome sink, say) is not swallowed with its batch's
    documents left undecided: the run ends with it."""
    class Bug(BaseException):
        pass

    _, batches = make_batches(8, 4)

    def sink(outcome):
        raise Bug("a sink that breaks")

    executor = Executor(Scripted(), policy(), progress=False, on_outcome=sink)
    with pytest.raises(Bug):
        executor.run(batches, virtual=True)


def test_the_first_call_of_a_concurrent_run_carries_one_document_and_goes_alone():
    _, batches = make_batches(40, 8)
    provider = Scripted(latency=1.0)
    report = Executor(provider, policy(concurrency=ConcurrencyPolicy(max=4)), progress=False).run(batches, virtual=True)
    first, second = provider.calls[0], provider.calls[1]
    assert len(first[1]) == 1 and second[0] >= first[0] + 1.0  # the others waited for it, a short call
    assert report.extracted == 40 and report.calls == 6
    one = Scripted(latency=1.0)  # one call at a time: no probe, nothing to wait for
    assert Executor(one, policy(), progress=False).run(make_batches(16, 8)[1], virtual=True).calls == 2
