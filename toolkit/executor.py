"""The retry executor: runs ``extract_fn(batch)`` over packed batches, concurrently and safely.

It knows nothing of LLMs. ``extract_fn`` takes a :class:`DocumentBatch` and returns a
:class:`BatchExtractionResult` (or an awaitable of one), or raises; exceptions are sorted by
:func:`toolkit.errors.classify`, and what follows each call is decided by the pure
:func:`toolkit.decisions.next_action`. Guarantees:

* every document ends in exactly one outcome: ``extracted``, ``failed`` (with its last error), or
  ``pending`` when the run stopped before reaching it (fatal error, provider down, Ctrl-C): a
  pending document was never given up on and a resumed run picks it up;
* a reply that covers only some documents keeps those and re-sends only the missing ones; ids that
  were not asked for are dropped and counted; nothing becomes "zero entities" because a call failed;
* cost is bounded: a packed batch of n documents costs at most ``max_calls_per_document * n`` calls
  (see :mod:`toolkit.policies`); a fatal error costs one call per run (the first call goes alone).

An :class:`Executor` holds settings only; each run keeps its state in a run object of its own, so
one executor can run twice at once. A sync ``extract_fn`` runs in worker threads with the caller's
context variables (``dspy.context`` overrides included), as DSPy's parallelizer does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from toolkit.counts import Counts
from toolkit.decisions import BatchState, Call, Done, Fail, Split, Wait, describe, is_retry, next_action
from toolkit.documents import Document
from toolkit.errors import ExtractionError, FatalError, MalformedReply, Overloaded, RateLimited, classify
from toolkit.limits import CircuitBreaker, ConcurrencyGate, ProviderDown, SlidingWindowLimiter
from toolkit.metrics import AttemptRecord, RunMetrics
from toolkit.models import BatchExtractionResult, BatchStatus, DocumentBatch
from toolkit.outcomes import (
    DocumentOutcome,
    ExecutionReport,
    OutcomeBook,
    OutcomeNotKept,
    Progress,
    ProgressFn,
    RunStopped,
    Status,
    result_from_outcomes,
)
from toolkit.policies import ExecutionPolicy, RetryPolicy
from toolkit.redact import redact

__all__ = ["DocumentOutcome", "ExecutionReport", "Executor", "Progress", "RunStopped", "Status",
           "extract_batch_with_retry", "result_from_outcomes"]

ExtractFn = Callable[[DocumentBatch], "BatchExtractionResult | Awaitable[BatchExtractionResult]"]
PrepareFn = Callable[[DocumentBatch], DocumentBatch]


class _Stop(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_SCRATCH = random.Random(0)  # for looking ahead at the next action without using the run's jitter draws


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Executor:
    """Runs ``extract_fn`` over batches under ``policy``; ``metrics`` receives one row per call.

    ``progress``: ``None`` shows a tqdm bar for runs of 200+ documents, ``False`` shows nothing, a
    callable receives a :class:`Progress` after every finished document. ``on_outcome`` receives
    each document's final :class:`DocumentOutcome` as soon as it is decided (to store it at once).
    ``prepare(batch)`` readies a batch for one call (:meth:`DocumentBatch.for_call`: its output cap
    and what the rate limiter charges; default: the batch as packed). ``pacing(policy)`` gives a
    run its concurrency gate and rate limiter (default: its own; a scale-out engine shares global
    ones across processes, see :mod:`toolkit.scaleout`).
    """

    def __init__(
        self,
        extract_fn: ExtractFn,
        policy: ExecutionPolicy | None = None,
        metrics: RunMetrics | None = None,
        progress: ProgressFn | bool | None = None,
        on_outcome: Callable[[DocumentOutcome], None] | None = None,
        prepare: PrepareFn | None = None,
        pacing: Callable[[ExecutionPolicy], tuple[Any, Any]] | None = None,
    ) -> None:
        self.extract_fn = extract_fn
        self.policy = policy or ExecutionPolicy()
        self.metrics = metrics or RunMetrics()
        self.progress = progress
        self.on_outcome = on_outcome
        self.prepare = prepare or (lambda batch: batch)
        self.pacing = pacing or (lambda policy: (ConcurrencyGate(policy.concurrency), SlidingWindowLimiter(policy.rate)))
        self.report: ExecutionReport | None = None  # the last run's, also after Ctrl-C

    def run(self, batches: Sequence[DocumentBatch], virtual: bool = False) -> ExecutionReport:
        """Run to completion (on a virtual clock if ``virtual``). Works inside Jupyter's loop too
        (in a thread of its own, with the caller's context variables)."""
        from toolkit.vclock import VirtualTimeLoop

        def go() -> ExecutionReport:
            with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else None) as runner:
                return runner.run(self.run_async(batches))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return go()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a notebook's loop is running
            return pool.submit(contextvars.copy_context().run, go).result()

    async def run_async(self, batches: Sequence[DocumentBatch]) -> ExecutionReport:
        run = _Run(self, batches)
        self.report = run.report
        return await run.execute(batches)


class _Budget:
    """Calls left to one packed batch's tree (its sub-batches share it)."""

    def __init__(self, calls: int) -> None:
        self.granted = self.left = calls


class _Run:
    """One run's state: outcomes, report, pacing objects; the call loop around :func:`next_action`."""

    def __init__(self, executor: Executor, batches: Sequence[DocumentBatch]) -> None:
        ids = [i for b in batches for i in b.document_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("a document id appears in more than one batch (or twice in one)")
        self.executor = executor
        policy = self.policy = executor.policy
        self.metrics = executor.metrics
        self.book = OutcomeBook(ids, executor.on_outcome, executor.progress)
        self.outcomes, self.report = self.book.outcomes, self.book.report
        self.gate, self.limiter = executor.pacing(policy)
        for batch in batches:
            self.limiter.check(batch.budget_tokens)
        self.breaker = CircuitBreaker(policy.breaker)
        self.stopping: BaseException | None = None
        self.rng = random.Random(policy.seed)
        fn = executor.extract_fn
        self.pool = None if _is_async(fn) else concurrent.futures.ThreadPoolExecutor(
            policy.concurrency.max, thread_name_prefix="extract")
        self.t0 = 0.0

    async def execute(self, batches: Sequence[DocumentBatch]) -> ExecutionReport:
        loop = asyncio.get_running_loop()
        report = self.report
        self.t0 = loop.time()
        self.metrics.start()
        try:
            await self._run_all(batches)
        except asyncio.CancelledError:
            report.stop_reason = "cancelled"
            raise
        finally:
            report.seconds = loop.time() - self.t0
            report.max_concurrency_seen = self.gate.max_seen
            report.concurrency_history = list(self.gate.history)
            report.breaker_trips = self.breaker.total_trips
            self.metrics.finish()
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.book.close()
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

    async def _run_root(self, batch: DocumentBatch) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        budget = _Budget(self.policy.split.budget(batch.batch_size))
        batch.transition(BatchStatus.PROCESSING)
        await self._process(batch, budget, BatchState(tuple(batch.document_ids)))
        mine = [self.outcomes[i] for i in batch.document_ids]
        result = result_from_outcomes(batch.batch_id, mine, loop.time() - start, max(0, budget.granted - budget.left - 1))
        batch.transition(BatchStatus.COMPLETED if result.success_status else BatchStatus.FAILED)
        self.metrics.update_with_batch(result, batch.batch_size)

    async def _process(self, batch: DocumentBatch, budget: _Budget, state: BatchState) -> None:
        """Carry out :func:`next_action` on one (sub-)batch until it is done, split or failed."""
        queued_wait = 0.0
        while True:
            action = next_action(state, budget.left, self.policy, self.rng)
            if isinstance(action, Wait):
                if action.pause_all:
                    self.gate.pause_until(asyncio.get_running_loop().time() + action.seconds)
                await asyncio.sleep(action.seconds)
                state, queued_wait = state.after_wait(), action.seconds
            elif isinstance(action, Call):
                budget.left -= 1
                state = await self._attempt(_sub_batch(batch, list(action.ids)), state.called(), budget, queued_wait)
                queued_wait = 0.0
            elif isinstance(action, Split):
                half = len(action.ids) // 2
                halves = (action.ids[:half], ".1"), (action.ids[half:], ".2")
                await asyncio.gather(*(self._process(_sub_batch(batch, list(ids), suffix), budget,
                                                     BatchState(ids, last_error=state.last_error))
                                       for ids, suffix in halves))
                return
            elif isinstance(action, Fail):
                self._keep(lambda: [self.book.finish(i, "failed", reason=action.reason) for i in action.ids])
                return
            else:
                assert isinstance(action, Done)
                return

    async def _attempt(self, batch: DocumentBatch, state: BatchState, budget: _Budget, waited: float) -> BatchState:
        """One call on ``batch`` and what it leads to; the call's record carries the counts of both."""
        error, result, record = await self._call(batch, state.attempts, waited)
        extra = 0
        if error is None:
            asked = set(batch.document_ids)
            extra = sum(1 for i in result.per_document_entities if i not in asked)
            missing = self._keep(lambda: self.book.absorb(batch, result))
            state = state.replied(missing, result.error_message)
        else:
            state = state.failed(error)
        following = next_action(state, budget.left, self.policy, _SCRATCH)  # is a split next? (pure)
        decided = Counts(retries=int(is_retry(error)), splits=int(isinstance(following, Split)),
                         requeued=len(state.remaining) if error is None else 0, extra_ids=extra)
        record = replace(record, counts=record.counts + decided)
        self.metrics.record_attempt(record)
        self.report.counts = self.report.counts + record.counts
        return state

    async def _call(self, batch: DocumentBatch, attempt: int, waited: float
                    ) -> tuple[ExtractionError | None, BatchExtractionResult | None, AttemptRecord]:
        """One call: slot, rate limit, invoke, classify. Fatal errors stop the run (recorded first)."""
        loop = asyncio.get_running_loop()
        queued = loop.time()
        error, result, rate_wait, at = None, None, 0.0, time.time()
        prepared = batch
        async with self.gate.slot() as slot:
            started, in_flight = slot.started, self.gate.in_flight
            if self.stopping is not None:  # another call hit a fatal error: send nothing more
                raise _Stop(self.stopping)
            prepared = self.executor.prepare(batch)
            rate_wait, at = await self.limiter.acquire(prepared.call_tokens)
            started = loop.time()
            for i in batch.document_ids:
                self.outcomes[i].calls += 1
            try:
                result = await self._invoke(prepared)
                if not result.success_status and not result.per_document_entities:
                    raise MalformedReply(result.error_message or "extractor reported failure")
                slot.outcome = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every provider error is classified
                error, result = classify(exc), None
                if isinstance(error, FatalError):
                    self.stopping = error  # before the slot is released to the next call
                slot.outcome = "throttled" if isinstance(error, (RateLimited, Overloaded)) else "error"
        record = AttemptRecord(
            batch_id=batch.batch_id, document_ids=tuple(batch.document_ids), attempt=attempt,
            outcome="ok" if error is None else ("fatal" if isinstance(error, FatalError) else "error"),
            started=started - self.t0, at=at, seconds=loop.time() - started, delay_before=waited + (started - queued),
            rate_wait=rate_wait, in_flight=in_flight, error_class=None if error is None else error.kind,
            error=None if error is None else describe(error)[:500], counts=call_counts(prepared, result))
        if isinstance(error, FatalError):
            self.metrics.record_attempt(record)
            self.report.counts = self.report.counts + record.counts
            raise _Stop(error)
        fault = None if error is None else (getattr(error, "provider_fault", False) or None)
        try:
            self.breaker.record(False if error is None else fault, self.gate, started)
        except ProviderDown as down:
            self.stopping = down
            self.metrics.record_attempt(record)
            self.report.counts = self.report.counts + record.counts
            raise _Stop(down) from error
        return error, result, record

    def _keep(self, decide: Callable[[], Any]) -> Any:
        """``decide()`` (outcomes handed to the book); an outcome that cannot be kept stops the run."""
        try:
            return decide()
        except OutcomeNotKept as exc:
            self.stopping = exc.error
            raise _Stop(exc.error) from exc

    async def _invoke(self, batch: DocumentBatch) -> BatchExtractionResult:
        timeout = self.policy.call_timeout
        fn = self.executor.extract_fn
        if self.pool is None:
            call: Awaitable[BatchExtractionResult] = fn(batch)  # type: ignore[assignment]
        else:  # in a worker thread, with the caller's context variables (dspy.context and the like)
            call = asyncio.get_running_loop().run_in_executor(self.pool, contextvars.copy_context().run, fn, batch)
        return await (asyncio.wait_for(call, timeout) if timeout else call)

def call_counts(batch: DocumentBatch, result: BatchExtractionResult | None) -> Counts:
    """The counts one call has before any decision: its reply's validation, tokens and answers."""
    base = (result.validation if result is not None else None) or Counts()
    if result is None:
        return replace(base, calls=1, budget_tokens=batch.call_tokens)
    usage = result.tokens_in is not None or result.tokens_out is not None
    return replace(base, calls=1, budget_tokens=batch.call_tokens, usage_reports=int(usage),
                   tokens_in=result.tokens_in or 0, tokens_out=result.tokens_out or 0,
                   cached_tokens=result.tokens_cached or 0,
                   documents_ok=len(result.per_document_entities),
                   entities=sum(len(v) for v in result.per_document_entities.values()))


def _sub_batch(parent: DocumentBatch, ids: list[str], suffix: str = "") -> DocumentBatch:
    if ids == parent.document_ids and not suffix:
        return parent
    child = DocumentBatch(batch_id=parent.batch_id + suffix, base_reserve=parent.base_reserve,
                          per_document_reserve=parent.per_document_reserve)
    by_id = {d.id: d for d in parent.documents}
    tokens = dict(zip(parent.document_ids, parent.token_counts))
    for i in ids:
        child.add_document(by_id.get(i, i), tokens.get(i, 0))
    return child


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
    policy = replace(base, retry=RetryPolicy(max_attempts=max_retries + 1, delays=tuple(retry_delays) or (0.0,),
                                             jitter=base.retry.jitter, max_delay=base.retry.max_delay))
    batch = DocumentBatch()
    for document in documents:
        batch.add_document(document, 0)
    runner = Executor(lambda b: extract_fn(list(b.documents)), policy, progress=False)
    return runner.run([batch], virtual=virtual).to_batch_result(batch.batch_id)
