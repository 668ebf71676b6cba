"""The retry executor: runs ``extract_fn(batch)`` over packed batches, concurrently and safely.

It knows nothing of LLMs. ``extract_fn`` takes a :class:`DocumentBatch` and returns a
:class:`BatchExtractionResult` (or an awaitable of one), or raises; exceptions are sorted by
:func:`toolkit.errors.classify`. Guarantees:

* every document ends in exactly one outcome: ``extracted``, ``failed`` (with its last error), or
  ``pending`` when the run stopped before reaching it (fatal error, provider down, Ctrl-C): a
  pending document was never given up on and a resumed run picks it up;
* a reply that covers only some documents keeps those and re-sends only the missing ones; ids that
  were not asked for are dropped and counted; nothing becomes "zero entities" because a call failed;
* cost is bounded: a packed batch of n documents costs at most ``max_calls_per_document * n`` calls
  (see :mod:`toolkit.policies`); a fatal error costs one call per run (the first call goes alone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from toolkit.documents import Document, Entity, Relationship
from toolkit.errors import (
    ContextLengthExceeded,
    ExtractionError,
    FatalError,
    MalformedReply,
    Overloaded,
    RateLimited,
    Unsendable,
    classify,
)
from toolkit.limits import CircuitBreaker, ConcurrencyGate, ProviderDown, SlidingWindowLimiter
from toolkit.metrics import AttemptRecord, RunMetrics
from toolkit.models import BatchExtractionResult, BatchStatus, DocumentBatch
from toolkit.policies import ExecutionPolicy, RetryPolicy
from toolkit.redact import redact

ExtractFn = Callable[[DocumentBatch], "BatchExtractionResult | Awaitable[BatchExtractionResult]"]
Status = Literal["extracted", "failed", "pending"]
ProgressFn = Callable[["Progress"], None]


@dataclass
class DocumentOutcome:
    id: str
    status: Status = "pending"
    entities: list[Entity] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    reason: str | None = None
    calls: int = 0  # calls this document was part of


@dataclass(frozen=True)
class Progress:
    total: int
    extracted: int
    failed: int
    calls: int
    retries: int


@dataclass
class ExecutionReport:
    """What a run did, per document (in input order) and in total."""

    outcomes: list[DocumentOutcome]
    calls: int = 0
    retries: int = 0
    splits: int = 0
    requeued: int = 0  # documents re-sent because a reply left them out
    extra_ids: int = 0  # ids in replies that were not asked for (dropped)
    duplicated: int = 0  # outcomes set twice for one document (must stay 0)
    breaker_trips: int = 0
    max_concurrency_seen: int = 0
    concurrency_history: list[tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0  # on the loop's clock (virtual in virtual runs)
    stop_reason: str | None = None

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def extracted(self) -> int:
        return self.count("extracted")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def pending(self) -> int:
        return self.count("pending")

    def summary(self) -> dict[str, Any]:
        n = len(self.outcomes)
        return {
            "documents": n,
            "extracted": self.extracted,
            "failed": self.failed,
            "pending": self.pending,
            "calls": self.calls,
            "calls_per_document": self.calls / n if n else 0.0,
            "retries": self.retries,
            "splits": self.splits,
            "requeued": self.requeued,
            "extra_ids": self.extra_ids,
            "duplicated": self.duplicated,
            "breaker_trips": self.breaker_trips,
            "max_concurrency_seen": self.max_concurrency_seen,
            "seconds": self.seconds,
            "stop_reason": self.stop_reason,
        }

    def to_batch_result(self, batch_id: str = "run") -> BatchExtractionResult:
        """All outcomes as one result (see :func:`result_from_outcomes`)."""
        return result_from_outcomes(batch_id, self.outcomes, self.seconds, self.retries)


def result_from_outcomes(
    batch_id: str, outcomes: Sequence[DocumentOutcome], seconds: float, retries: int
) -> BatchExtractionResult:
    """Extracted documents keyed by id; every other one in ``failed_document_ids`` with its reason
    (never as an empty entity list)."""
    done = [o for o in outcomes if o.status == "extracted"]
    failed = {o.id: o.reason or o.status for o in outcomes if o.status != "extracted"}
    return BatchExtractionResult(
        batch_id,
        per_document_entities={o.id: o.entities for o in done},
        per_document_relationships={o.id: o.relationships for o in done},
        processing_time=seconds,
        success_status=not failed,
        retry_count=retries,
        error_message="; ".join(f"{k}: {v}" for k, v in list(failed.items())[:5]) or None,
        failed_document_ids=failed,
    )


class RunStopped(Exception):
    """The run stopped before finishing (fatal error or provider down); ``report`` has the rest."""

    def __init__(self, message: str, report: ExecutionReport) -> None:
        super().__init__(message)
        self.report = report


class _Stop(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def describe(error: ExtractionError) -> str:
    """An error as a document's failure reason or a call's record: its kind and message, redacted."""
    return redact(f"{error.kind}: {error}") or error.kind


def _validation_fields(result: BatchExtractionResult | None) -> dict[str, int]:
    counts = result.validation if result is not None else None
    if counts is None:
        return {}
    return {k: getattr(counts, k) for k in ("repaired", "dropped", "ungrounded", "leaks", "unknown_ids", "missing_ids",
                                            "loops_ended")}


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Executor:
    """Runs ``extract_fn`` over batches under ``policy``; ``metrics`` receives one row per call.

    ``progress``: ``None`` shows a tqdm bar for runs of 200+ documents, ``False`` shows nothing, a
    callable receives a :class:`Progress` after every finished document. ``on_outcome`` receives
    each document's final :class:`DocumentOutcome` as soon as it is decided (to store it at once).
    ``charge(batch)`` is what the rate limiter counts for a call (default: the batch's packed
    budget; an extractor that sizes its output allowance from measured replies charges less).
    """

    def __init__(
        self,
        extract_fn: ExtractFn,
        policy: ExecutionPolicy | None = None,
        metrics: RunMetrics | None = None,
        progress: ProgressFn | bool | None = None,
        on_outcome: Callable[[DocumentOutcome], None] | None = None,
        charge: Callable[[DocumentBatch], int] | None = None,
    ) -> None:
        self.extract_fn = extract_fn
        self.policy = policy or ExecutionPolicy()
        self.metrics = metrics or RunMetrics()
        self.progress = progress
        self.on_outcome = on_outcome
        self.charge = charge or (lambda batch: batch.budget_tokens)
        self.report: ExecutionReport | None = None  # the last run's, also after Ctrl-C

    # ----------------------------------------------------------------------------------------- run
    def run(self, batches: Sequence[DocumentBatch], virtual: bool = False) -> ExecutionReport:
        """Run to completion (on a virtual clock if ``virtual``). Works inside Jupyter's loop too."""
        from toolkit.vclock import VirtualTimeLoop

        def go() -> ExecutionReport:
            with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else None) as runner:
                return runner.run(self.run_async(batches))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return go()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a notebook's loop is running
            return pool.submit(go).result()

    async def run_async(self, batches: Sequence[DocumentBatch]) -> ExecutionReport:
        policy = self.policy
        ids = [i for b in batches for i in b.document_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("a document id appears in more than one batch (or twice in one)")
        self._outcomes = {i: DocumentOutcome(i) for i in ids}
        report = self.report = ExecutionReport(outcomes=[self._outcomes[i] for i in ids])
        self._gate = ConcurrencyGate(policy.concurrency)
        self._limiter = SlidingWindowLimiter(policy.rate)
        for batch in batches:
            self._limiter.check(batch.budget_tokens)
        self._breaker = CircuitBreaker(policy.breaker)
        self._stopping: BaseException | None = None
        self._rng = random.Random(policy.seed)
        self._pool = None if _is_async(self.extract_fn) else concurrent.futures.ThreadPoolExecutor(
            policy.concurrency.max, thread_name_prefix="extract"
        )
        self._bar = self._make_bar(len(ids))
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self.metrics.start()
        try:
            await self._run_all(batches)
        except asyncio.CancelledError:
            report.stop_reason = "cancelled"
            raise
        finally:
            report.seconds = loop.time() - self._t0
            report.max_concurrency_seen = self._gate.max_seen
            report.concurrency_history = list(self._gate.history)
            report.breaker_trips = self._breaker.total_trips
            self.metrics.finish()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._bar is not None:
                self._bar.close()
        if report.stop_reason is not None:
            raise RunStopped(report.stop_reason, report)
        return report

    async def _run_all(self, batches: Sequence[DocumentBatch]) -> None:
        """All batch trees at once (the gate bounds concurrency); the first stop cancels the rest."""
        try:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(self._run_root(batch))
        except* _Stop as stops:
            error = stops.exceptions[0].error
            self.report.stop_reason = redact(f"{type(error).__name__}: {error}")

    # ------------------------------------------------------------------------------ per batch tree
    async def _run_root(self, batch: DocumentBatch) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        budget = [self.policy.split.budget(batch.batch_size)]
        granted = budget[0]
        batch.transition(BatchStatus.PROCESSING)
        await self._process(batch, budget)
        mine = [self._outcomes[i] for i in batch.document_ids]
        result = result_from_outcomes(batch.batch_id, mine, loop.time() - start, max(0, granted - budget[0] - 1))
        batch.transition(BatchStatus.COMPLETED if result.success_status else BatchStatus.FAILED)
        self.metrics.update_with_batch(result, batch.batch_size)

    def _sub_batch(self, parent: DocumentBatch, ids: list[str], suffix: str = "") -> DocumentBatch:
        if ids == parent.document_ids and not suffix:
            return parent
        child = DocumentBatch(
            batch_id=parent.batch_id + suffix,
            base_reserve=parent.base_reserve,
            per_document_reserve=parent.per_document_reserve,
        )
        by_id = {d.id: d for d in parent.documents}
        tokens = dict(zip(parent.document_ids, parent.token_counts))
        for i in ids:
            child.add_document(by_id.get(i, i), tokens.get(i, 0))
        return child

    async def _split(self, batch: DocumentBatch, ids: list[str], budget: list[int], last_error: str) -> None:
        self.report.splits += 1
        half = len(ids) // 2
        children = [self._sub_batch(batch, ids[:half], ".1"), self._sub_batch(batch, ids[half:], ".2")]
        await asyncio.gather(*(self._process(child, budget, last_error) for child in children))

    async def _process(self, batch: DocumentBatch, budget: list[int], last_error: str = "no attempt made") -> None:
        """Attempts on one (sub-)batch until every document is done, split, or out of budget
        (``last_error``: what failed before, for the reason of a document that runs out of calls)."""
        retry: RetryPolicy = self.policy.retry
        remaining = list(batch.document_ids)
        attempt, delay = 0, 0.0
        while remaining:
            if attempt >= retry.max_attempts:
                if len(remaining) > 1:
                    return await self._split(batch, remaining, budget, last_error)
                return self._fail(remaining, last_error)
            if delay > 0:
                await asyncio.sleep(delay)
            if budget[0] <= 0:  # checked and spent with no await between: sibling trees share it
                return self._fail(remaining, f"call budget spent; last error: {last_error}")
            current = self._sub_batch(batch, remaining)
            attempt += 1
            budget[0] -= 1
            error, result = await self._call(current, attempt, delay)
            if error is None:
                remaining = self._absorb(current, result)
                if remaining:  # partial reply: re-send only the missing documents, at once
                    self.report.requeued += len(remaining)
                    detail = f": {result.error_message}" if result.error_message else ""
                    last_error, delay = redact(f"missing from the reply of attempt {attempt}{detail}"), 0.0
                continue
            last_error = describe(error)
            if isinstance(error, Unsendable):
                if len(remaining) > 1:
                    return await self._split(batch, remaining, budget, last_error)
                too_long = isinstance(error, ContextLengthExceeded)
                return self._fail(remaining, f"document too long for the model's context ({error})" if too_long
                                  else f"cannot be sent: {last_error}")
            self.report.retries += 1
            if isinstance(error, RateLimited) and error.retry_after is not None:
                delay = retry.retry_after(error.retry_after)
                self._gate.pause_until(asyncio.get_running_loop().time() + delay)
            else:
                delay = retry.delay(attempt, self._rng)

    async def _call(
        self, batch: DocumentBatch, attempt: int, delay_before: float
    ) -> tuple[ExtractionError | None, BatchExtractionResult | None]:
        """One call: slot, rate limit, invoke, classify, record. Fatal errors stop the run."""
        loop = asyncio.get_running_loop()
        queued = loop.time()
        started = await self._gate.acquire()
        in_flight = self._gate.in_flight
        outcome, error, result, waited, charged = "error", None, None, 0.0, 0
        try:
            if self._stopping is not None:  # another call hit a fatal error: send nothing more
                raise _Stop(self._stopping)
            charged = self.charge(batch)
            waited = await self._limiter.acquire(charged)
            started = loop.time()
            self.report.calls += 1
            for i in batch.document_ids:
                self._outcomes[i].calls += 1
            try:
                result = await self._invoke(batch)
                if not result.success_status and not result.per_document_entities:
                    raise MalformedReply(result.error_message or "extractor reported failure")
                outcome = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every provider error is classified
                error, result = classify(exc), None
                if isinstance(error, FatalError):
                    self._stopping = error  # before the slot is released to the next call
                outcome = "throttled" if isinstance(error, (RateLimited, Overloaded)) else "error"
        finally:
            await self._gate.release(started, outcome)
        seconds = loop.time() - started
        entities = sum(len(v) for v in result.per_document_entities.values()) if result else 0
        self.metrics.record_attempt(
            AttemptRecord(
                batch_id=batch.batch_id,
                document_ids=tuple(batch.document_ids),
                attempt=attempt,
                outcome="ok" if error is None else ("fatal" if isinstance(error, FatalError) else "error"),
                started=started - self._t0,
                seconds=seconds,
                delay_before=delay_before + (started - queued),
                budget_tokens=charged,
                tokens_in=result.tokens_in if result else None,
                tokens_out=result.tokens_out if result else None,
                error_class=None if error is None else error.kind,
                error=None if error is None else redact(str(error))[:500],
                entities=entities,
                documents_ok=len(result.per_document_entities) if result else 0,
                in_flight=in_flight,
                rate_wait=waited,
                **_validation_fields(result),
            )
        )
        if isinstance(error, FatalError):
            raise _Stop(error)
        fault = None if error is None else (getattr(error, "provider_fault", False) or None)
        try:
            self._breaker.record(False if error is None else fault, self._gate, started)
        except ProviderDown as down:
            self._stopping = down
            raise _Stop(down) from error
        return error, result

    async def _invoke(self, batch: DocumentBatch) -> BatchExtractionResult:
        timeout = self.policy.call_timeout
        if self._pool is None:
            call: Awaitable[BatchExtractionResult] = self.extract_fn(batch)  # type: ignore[assignment]
        else:
            call = asyncio.get_running_loop().run_in_executor(self._pool, self.extract_fn, batch)
        return await (asyncio.wait_for(call, timeout) if timeout else call)

    # ------------------------------------------------------------------------------- bookkeeping
    def _absorb(self, batch: DocumentBatch, result: BatchExtractionResult) -> list[str]:
        """Keep the documents the reply answered; return the ones it left out."""
        asked = set(batch.document_ids)
        answered = result.per_document_entities
        self.report.extra_ids += sum(1 for i in answered if i not in asked)
        for doc_id in batch.document_ids:
            if doc_id in answered and doc_id not in result.failed_document_ids:
                entities = [e for e in answered[doc_id] if e.source_document_id == doc_id]
                relationships = result.per_document_relationships.get(doc_id, [])
                self._finish(doc_id, "extracted", entities=entities, relationships=relationships)
        return [i for i in batch.document_ids if self._outcomes[i].status == "pending"]

    def _fail(self, ids: list[str], reason: str) -> None:
        for doc_id in ids:
            self._finish(doc_id, "failed", reason=reason)

    def _finish(self, doc_id: str, status: Status, **values: Any) -> None:
        outcome = self._outcomes[doc_id]
        if outcome.status != "pending":
            self.report.duplicated += 1
            return
        outcome.status = status
        for key, value in values.items():
            setattr(outcome, key, value)
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception as exc:  # noqa: BLE001 - the outcome could not be kept (the store failed)
                outcome.status = "pending"  # not kept, so not decided: a resumed run does it again
                self._stopping = exc
                raise _Stop(exc) from exc
        self._tick()

    def _make_bar(self, total: int):
        if self.progress is None and total >= 200:
            from tqdm.auto import tqdm

            return tqdm(total=total, unit="doc", desc="extract", leave=False)
        return None

    def _tick(self) -> None:
        report = self.report
        if self._bar is not None:
            self._bar.update(1)
        elif callable(self.progress):
            self.progress(Progress(len(report.outcomes), report.extracted, report.failed, report.calls, report.retries))


def extract_batch_with_retry(
    documents: Sequence[Document],
    extract_fn: Callable[[list[Document]], BatchExtractionResult],
    max_retries: int = 3,
    retry_delays: Sequence[float] = (2.0, 4.0, 8.0),
    *,
    policy: ExecutionPolicy | None = None,
    virtual: bool = False,
) -> BatchExtractionResult:
    """Original contract: one batch through the executor. ``extract_fn`` takes the documents.

    Failed documents are listed in ``failed_document_ids`` (never given empty entity lists); a
    fatal error raises :class:`RunStopped`.
    """
    from toolkit.policies import ConcurrencyPolicy

    base = policy or ExecutionPolicy(concurrency=ConcurrencyPolicy(max=1))
    policy = ExecutionPolicy(
        retry=RetryPolicy(max_attempts=max_retries + 1, delays=tuple(retry_delays) or (0.0,),
                          jitter=base.retry.jitter, max_delay=base.retry.max_delay),
        split=base.split, rate=base.rate, concurrency=base.concurrency, breaker=base.breaker,
        call_timeout=base.call_timeout, seed=base.seed,
    )
    batch = DocumentBatch()
    for document in documents:
        batch.add_document(document, 0)
    runner = Executor(lambda b: extract_fn(list(b.documents)), policy, progress=False)
    return runner.run([batch], virtual=virtual).to_batch_result(batch.batch_id)

