"""A fake provider that injects faults, and the chaos run that proves the executor's guarantees.

The provider is async and sleeps on the loop's clock, so a run of 10,000 documents executes in
virtual time (seconds of real time). It also enforces its own requests/tokens per minute the way a
hosted API does (429 with Retry-After), so a client that paces badly is caught.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from toolkit.core import BatchExtractionResult, DocumentBatch, Entity, Faults
from toolkit.execution import (
    AuthenticationFailed,
    CallTimeout,
    ConcurrencyPolicy,
    ContextLengthExceeded,
    ExecutionPolicy,
    ExecutionReport,
    Executor,
    MalformedReply,
    RateLimited,
    RateLimitPolicy,
    RunMetrics,
    RunStopped,
    ServerError,
    SlidingWindowLimiter,
    TruncatedReply,
    max_in_window,
)


@dataclass
class FakeProvider:
    """Async ``extract_fn`` with a latency model, fault injection and server-side rate limits."""

    faults: Faults = Faults()
    overhead: float = 0.5  # seconds per call
    prompt_tokens_per_second: float = 10_000.0
    output_tokens_per_second: float = 80.0
    tokens_per_entity: int = 12
    timeout_after: float = 30.0
    retry_after: float = 5.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_context: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._window = SlidingWindowLimiter(RateLimitPolicy(self.requests_per_minute, self.tokens_per_minute))
        self.rejected = 0

    @staticmethod
    def entities_for(doc_id: str, text: str) -> list[Entity]:
        """Deterministic stand-in for a model: words with an inner capital or a digit."""
        seen: dict[str, None] = {}
        for word in text.split():
            word = word.strip(".,;:()[]")
            if len(word) > 1 and (any(c.isupper() for c in word[1:]) or any(c.isdigit() for c in word)):
                seen.setdefault(word)
        return [Entity(w, "TERM", doc_id) for w in list(seen)[:20]]

    async def __call__(self, batch: DocumentBatch) -> BatchExtractionResult:
        now = asyncio.get_running_loop().time()
        tokens = batch.budget_tokens
        wait = self._window.try_acquire(tokens, now)
        if wait > 0:
            self.rejected += 1
            raise RateLimited("server-side limit exceeded", retry_after=max(1.0, wait))
        if self.max_context is not None and tokens > self.max_context:
            raise ContextLengthExceeded(f"{tokens} tokens > context window {self.max_context}")
        fault = self.faults.pick(self._rng)
        texts = dict(zip(batch.document_ids, (d.text for d in batch.documents))) if batch.documents else {
            i: "" for i in batch.document_ids
        }
        found = {i: self.entities_for(i, t) for i, t in texts.items()}
        out_tokens = self.tokens_per_entity * sum(len(v) for v in found.values()) + 8 * len(found)
        prompt = tokens - batch.batch_size * batch.per_document_reserve
        latency = self.overhead + prompt / self.prompt_tokens_per_second
        if fault == "unauthorized":
            raise AuthenticationFailed("401 Unauthorized: invalid API key")
        if fault == "context_length":
            raise ContextLengthExceeded("maximum context length exceeded")
        if fault in ("rate_limit", "rate_limit_retry_after"):
            after = self.retry_after if fault.endswith("after") else None
            raise RateLimited("429 Too Many Requests", retry_after=after)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_after)
            raise CallTimeout(f"no reply within {self.timeout_after} s")
        await asyncio.sleep(latency + out_tokens / self.output_tokens_per_second)
        if fault == "server_error":
            raise ServerError("500 Internal Server Error")
        if fault == "malformed":
            raise MalformedReply("reply is not valid JSON")
        if fault == "truncated":
            raise TruncatedReply("reply cut off at max_tokens")
        if fault == "missing_ids" and found:
            keep = self._rng.randrange(len(found))  # at least one document left out
            found = dict(list(found.items())[:keep])
        if fault == "extra_ids":
            found[f"ghost-{self._rng.randrange(10**6)}"] = [Entity("ghost", "TERM", "ghost")]
        return BatchExtractionResult(batch.batch_id, found, {i: [] for i in found}, tokens_in=tokens,
                                     tokens_out=out_tokens)


def chaos_summary(report: ExecutionReport, metrics: RunMetrics, provider: FakeProvider,
                  documents: int, real_seconds: float) -> dict[str, Any]:
    """The figures of a chaos run; rpm/tpm are measured from the recorded call start times."""
    frame = metrics.to_polars()
    starts = frame["started"].to_list() if frame.height else []
    tokens = frame["budget_tokens"].to_list() if frame.height else []
    pending = report.pending if report.stop_reason is None else 0
    return {
        **report.summary(),
        "documents": documents,
        "lost": documents - len(report.outcomes) + pending,
        "max_rpm_seen": max_in_window(starts, [1] * len(starts), 60.0),
        "max_tpm_seen": max_in_window(starts, tokens, 60.0),
        "server_rejections": provider.rejected,
        "virtual_seconds": report.seconds,
        "real_seconds": real_seconds,
    }


@dataclass
class ChaosRun:
    """A chaos run: its figures, why it stopped (None: it finished), every document's outcome and
    every call's record."""

    summary: dict[str, Any]
    stopped: RunStopped | None
    report: ExecutionReport
    metrics: RunMetrics


def run_chaos(batches: list[DocumentBatch], provider: FakeProvider, policy: ExecutionPolicy,
              progress: bool | None = False) -> ChaosRun:
    """Run ``batches`` through the executor against ``provider`` in virtual time."""
    metrics = RunMetrics()
    executor = Executor(provider, policy, metrics, progress=progress)
    start = time.perf_counter()
    stopped = None
    try:
        report = executor.run(batches, virtual=True)
    except RunStopped as exc:
        stopped, report = exc, exc.report
    documents = sum(b.batch_size for b in batches)
    return ChaosRun(chaos_summary(report, metrics, provider, documents, time.perf_counter() - start), stopped, report,
                    metrics)


def default_policy(concurrency: str = "auto:16", rpm: int | None = 500, tpm: int | None = 200_000,
                   seed: int = 0) -> ExecutionPolicy:
    return ExecutionPolicy(
        concurrency=ConcurrencyPolicy.parse(concurrency),
        rate=RateLimitPolicy(requests_per_minute=rpm, tokens_per_minute=tpm),
        call_timeout=None,
        seed=seed,
    )
