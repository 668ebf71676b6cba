"""The call loop of one packed batch: slot, rate limit, call, classify, then what
:func:`~toolkit.execution._decisions.next_action` says (retry, wait, split, fail, re-send the missing). The
run's state it works on (outcomes, pace, stop) is kept by :class:`toolkit.execution._stream.ExecutionStream`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Protocol, TypeVar, cast

from toolkit.core import BatchExtractionResult, BatchStatus, Counts, DocumentBatch
from toolkit.execution._decisions import (
    BatchState,
    Call,
    Done,
    Fail,
    Split,
    Wait,
    describe,
    is_free,
    is_retry,
    next_action,
)
from toolkit.execution._errors import (
    ExtractionError,
    FatalError,
    MalformedReply,
    Overloaded,
    RateLimited,
    StopRequested,
    classify,
)
from toolkit.execution._limits import CircuitBreaker, Gate, Pacing, ProviderDown, Window
from toolkit.execution._metrics import AttemptRecord, RunMetrics
from toolkit.execution._outcomes import (
    DocumentOutcome,
    ExecutionReport,
    OutcomeBook,
    OutcomeNotKept,
    ProgressFn,
    result_from_outcomes,
)
from toolkit.execution._policies import ExecutionPolicy
from toolkit.execution._ratelimits import RateInfo

STOP_REQUESTED = "stop requested: unfinished documents stay pending; resume with the same run name"
_SCRATCH = random.Random(0)  # for looking ahead at the next action without using the run's jitter draws


ExtractFn = Callable[[DocumentBatch], "BatchExtractionResult | Awaitable[BatchExtractionResult]"]
PrepareFn = Callable[[DocumentBatch], DocumentBatch]
T = TypeVar("T")


class ExecutorView(Protocol):
    """What a stream reads of its :class:`~toolkit.execution._executor.Executor`."""

    extract_fn: ExtractFn
    is_async: bool
    policy: ExecutionPolicy
    metrics: RunMetrics
    progress: ProgressFn | bool | None
    on_outcome: Callable[[DocumentOutcome], None] | None
    prepare: PrepareFn
    pacing: Pacing


class _Stop(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Budget:
    """Calls left to one packed batch's tree (its sub-batches share it); whether its first call got
    a slot; how many of its calls are with the provider."""

    def __init__(self, calls: int) -> None:
        self.granted = self.left = calls
        self.started = False
        self.sending = 0


class CallSender:
    """One call of a (sub-)batch: slot, rate limit, invoke, classify, record; over the run's pace
    (gate, window, breaker) and stop state that :class:`ExecutionStream` keeps."""

    policy: ExecutionPolicy
    metrics: RunMetrics
    executor: ExecutorView
    outcomes: dict[str, DocumentOutcome]
    report: ExecutionReport
    gate: Gate
    limiter: Window
    breaker: CircuitBreaker
    stop: threading.Event | None
    stopping: BaseException | None
    pool: concurrent.futures.ThreadPoolExecutor | None
    t0: float | None

    def _started(self, budget: Budget) -> None:
        raise NotImplementedError

    def _throttled(self, seconds: float, error: ExtractionError | None) -> None:
        """A provider's 429 said when to come back. Where the pace knows the account's limits, it
        was a little ahead of the provider's count: only the rejected call waits, and the pace
        slows a little; where it knows none, every call waits (no burst follows the pause)."""
        limiter = self.limiter
        info = getattr(error, "rate_info", None)
        if info is not None:
            learn_limits(limiter, info)
        if limiter.rpm is not None or limiter.tpm is not None:
            limiter.throttled()
        else:
            self.gate.pause_until(asyncio.get_running_loop().time() + seconds)

    def _record(self, record: AttemptRecord) -> None:
        self.metrics.record_attempt(record)
        self.report.counts = self.report.counts + record.counts

    async def _call(self, batch: DocumentBatch, attempt: int, waited: float, budget: Budget
                    ) -> tuple[ExtractionError | None, BatchExtractionResult | None, AttemptRecord]:
        """One call: slot, rate limit, invoke, classify. Fatal errors stop the run (recorded first)."""
        loop = asyncio.get_running_loop()
        queued = loop.time()
        error: ExtractionError | None = None
        result: BatchExtractionResult | None = None
        rate_wait, at = 0.0, time.time()
        prepared = batch
        async with self.gate.slot() as slot:
            self._started(budget)
            started, in_flight = slot.started, self.gate.in_flight
            if self.stop is not None and self.stop.is_set():
                self.stopping = self.stopping or StopRequested(STOP_REQUESTED)
            if self.stopping is not None:  # the run halted: send nothing more
                raise _Stop(self.stopping)
            prepared = self.executor.prepare(batch)
            rate_wait, at = await self.limiter.acquire(prepared.call_tokens)
            started = loop.time()
            for i in batch.document_ids:
                self.outcomes[i].calls += 1
            budget.sending += 1
            try:
                result = await self._invoke(prepared)
                if not result.success_status and not result.per_document_entities:
                    raise MalformedReply(result.error_message or "extractor reported failure")
                slot.outcome = "ok"
                if self.limiter.rpm or self.limiter.tpm:
                    self.gate.paced()
            except asyncio.CancelledError:  # sent, so paid for: recorded before it goes
                self._record(self._attempt_record(batch, prepared, None, None, attempt, started, queued, waited,
                                                  rate_wait, at, in_flight, outcome="cancelled"))
                raise
            except Exception as exc:  # noqa: BLE001 - every provider error is classified
                error, result = classify(exc), None
                if isinstance(error, FatalError):
                    self.stopping = error  # before the slot is released to the next call
                slot.outcome = "throttled" if isinstance(error, (RateLimited, Overloaded)) else "error"
            finally:
                budget.sending -= 1
        record = self._attempt_record(batch, prepared, error, result, attempt, started, queued, waited, rate_wait,
                                      at, in_flight)
        self._verdict(error, record, started)
        return error, result, record

    def _verdict(self, error: ExtractionError | None, record: AttemptRecord, started: float) -> None:
        """A fatal error, or the breaker's last trip, stops the run (the call recorded first)."""
        if isinstance(error, FatalError):
            self._record(record)
            raise _Stop(error)
        fault = None if error is None else (getattr(error, "provider_fault", False) or None)
        try:
            self.breaker.record(False if error is None else fault, self.gate, started)
        except ProviderDown as down:
            self.stopping = down
            self._record(record)
            raise _Stop(down) from error

    def _attempt_record(self, batch: DocumentBatch, prepared: DocumentBatch, error: ExtractionError | None,
                        result: BatchExtractionResult | None, attempt: int, started: float, queued: float,
                        waited: float, rate_wait: float, at: float, in_flight: int,
                        outcome: str | None = None) -> AttemptRecord:
        loop_now = asyncio.get_running_loop().time()
        kind = "ok" if error is None else ("fatal" if isinstance(error, FatalError) else "error")
        return AttemptRecord(
            batch_id=batch.batch_id, document_ids=tuple(batch.document_ids), attempt=attempt,
            outcome=outcome or kind, started=started - (self.t0 or 0.0), at=at, seconds=loop_now - started,
            delay_before=waited + (started - queued), rate_wait=rate_wait, in_flight=in_flight,
            error_class=None if error is None else error.kind,
            error=None if error is None else describe(error)[:500], counts=call_counts(prepared, result))

    async def _invoke(self, batch: DocumentBatch) -> BatchExtractionResult:
        timeout = self.policy.call_timeout
        fn = self.executor.extract_fn
        call: Awaitable[BatchExtractionResult]
        if self.pool is None:
            call = cast(Awaitable[BatchExtractionResult], fn(batch))  # an async extract_fn (is_async)
        else:  # in a worker thread, with the caller's context variables (dspy.context and the like)
            sync = cast(Callable[[DocumentBatch], BatchExtractionResult], fn)
            call = asyncio.get_running_loop().run_in_executor(self.pool, contextvars.copy_context().run, sync, batch)
        return await (asyncio.wait_for(call, timeout) if timeout else call)


class BatchLoop(CallSender):
    """The call loop of one packed batch (its retries, splits and outcomes), over the run's state
    that :class:`ExecutionStream` keeps."""

    book: OutcomeBook
    rng: random.Random
    crashed: BaseException | None

    def halt(self, error: BaseException) -> None:
        raise NotImplementedError

    async def _root(self, batch: DocumentBatch, budget: Budget) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        batch.transition(BatchStatus.PROCESSING)
        try:
            await self._process(batch, budget, BatchState(tuple(batch.document_ids)))
        except _Stop as stop:
            self.halt(stop.error)
            return
        mine = [self.outcomes[i] for i in batch.document_ids]
        result = result_from_outcomes(batch.batch_id, mine, loop.time() - start,
                                      max(0, budget.granted - budget.left - 1))
        batch.transition(BatchStatus.COMPLETED if result.success_status else BatchStatus.FAILED)
        self.metrics.update_with_batch(result, batch.batch_size)

    async def _process(self, batch: DocumentBatch, budget: Budget, state: BatchState) -> None:
        """Carry out :func:`next_action` on one (sub-)batch until it is done, split or failed."""
        queued_wait = 0.0
        while True:
            action = next_action(state, budget.left, self.policy, self.rng)
            if isinstance(action, Wait):
                if action.pause_all:
                    self._throttled(action.seconds, state.error)
                await asyncio.sleep(action.seconds)
                state, queued_wait = state.after_wait(), action.seconds
            elif isinstance(action, Call):
                budget.left -= 1
                state = await self._attempt(sub_batch(batch, list(action.ids)), state.called(), budget, queued_wait)
                queued_wait = 0.0
            elif isinstance(action, Split):
                half = len(action.ids) // 2
                halves = (action.ids[:half], ".1"), (action.ids[half:], ".2")
                ends = await asyncio.gather(*(self._process(sub_batch(batch, list(ids), suffix), budget,
                                                            BatchState(ids, last_error=state.last_error))
                                              for ids, suffix in halves), return_exceptions=True)
                for end in ends:  # both halves are over (a call of one may have been in flight)
                    if isinstance(end, BaseException):
                        raise end
                return
            elif isinstance(action, Fail):
                self._keep(partial(self.book.fail, action.ids, action.reason))
                return
            else:
                assert isinstance(action, Done)
                return

    async def _attempt(self, batch: DocumentBatch, state: BatchState, budget: Budget, waited: float) -> BatchState:
        """One call on ``batch`` and what it leads to; the call's record carries the counts of both."""
        error, result, record = await self._call(batch, state.attempts, waited, budget)
        extra = 0
        if result is not None:  # answered (no error)
            asked = set(batch.document_ids)
            extra = sum(1 for i in result.per_document_entities if i not in asked)
            try:
                missing = self._keep(partial(self.book.absorb, batch, result))
            except _Stop:
                self._record(record)  # the call was made (and paid for) though its answer was not kept
                raise
            state = state.replied(missing, result.error_message)
        else:
            assert error is not None
            free = is_free(state, error, self.policy)
            budget.left += int(free)  # a 429 is not billed: the batch's budget is not spent on it
            state = state.failed(error, free)
        following = next_action(state, budget.left, self.policy, _SCRATCH)  # is a split next? (pure)
        decided = Counts(retries=int(is_retry(error)), rate_limited=int(isinstance(error, RateLimited)),
                         splits=int(isinstance(following, Split)),
                         requeued=len(state.remaining) if error is None else 0, extra_ids=extra)
        self._record(replace(record, counts=record.counts + decided))
        return state

    def _keep(self, decide: Callable[[], T]) -> T:
        """``decide()`` (outcomes handed to the book); an outcome that cannot be kept (the store
        failed) halts the run, which then ends with that error (it is not the provider's)."""
        try:
            return decide()
        except OutcomeNotKept as exc:
            self.stopping = exc.error
            self.crashed = self.crashed or exc.error
            raise _Stop(exc.error) from exc


def learn_limits(limiter: Window, info: RateInfo) -> None:
    """Hand ``limiter`` the per-minute limits a provider's reply said (tokens: the overall limit,
    else the input tokens', as Anthropic splits them)."""
    tokens = info.tokens.limit or info.input_tokens.limit
    resets = [b.reset for b in (info.requests, info.tokens, info.input_tokens) if b.reset is not None]
    if info.requests.limit or tokens:
        limiter.learn(info.requests.limit, tokens, max(resets) if resets else None, info.processing, info.received)


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


def sub_batch(parent: DocumentBatch, ids: list[str], suffix: str = "") -> DocumentBatch:
    if ids == parent.document_ids and not suffix:
        return parent
    child = DocumentBatch(batch_id=parent.batch_id + suffix, base_reserve=parent.base_reserve,
                          per_document_reserve=parent.per_document_reserve)
    by_id = {d.id: d for d in parent.documents}
    tokens = dict(zip(parent.document_ids, parent.token_counts))
    for i in ids:
        child.add_document(by_id.get(i, i), tokens.get(i, 0))
    return child
