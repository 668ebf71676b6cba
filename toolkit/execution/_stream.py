"""One run of the executor, fed batches as they come (the call loop of each batch: toolkit.execution._calls).

An :class:`ExecutionStream` lives as long as its run. Batches are added while it runs (a chunk of
a corpus at a time), and everything that paces the run (concurrency gate, rate-limit window,
circuit breaker, a provider's Retry-After pause) belongs to the stream, not to a chunk, so a chunk
boundary neither resets the pace nor drains the calls in flight. :class:`~toolkit.execution._executor.Executor`
documents the guarantees; this module carries them out.

Stopping: a fatal error, a provider that stays down, an outcome that cannot be kept or the
caller's ``stop`` event halts the stream. No call starts after that; calls already sent finish and
are recorded (they were paid for), and their answers are kept; every other document stays pending.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Sequence

from toolkit.core import DocumentBatch, redact
from toolkit.execution._calls import STOP_REQUESTED, BatchLoop, Budget, ExecutorView, sub_batch
from toolkit.execution._errors import StopRequested
from toolkit.execution._limits import CircuitBreaker
from toolkit.execution._outcomes import ExecutionReport, OutcomeBook, RunStopped

_STOP_POLL = 0.1  # seconds between looks at the caller's stop event (real time only)


class ExecutionStream(BatchLoop):
    """A run's outcomes, report and pace; batches go in with :meth:`add` (inside the run's loop)."""

    def __init__(self, executor: ExecutorView, stop: threading.Event | None = None) -> None:
        self.executor = executor
        self.policy = executor.policy
        self.metrics = executor.metrics
        self.book = OutcomeBook([], executor.on_outcome, executor.progress)
        self.outcomes, self.report = self.book.outcomes, self.book.report
        self.gate, self.limiter = executor.pacing(self.policy)
        self.breaker = CircuitBreaker(self.policy.breaker)
        self.stop = stop
        self.stopping: BaseException | None = None
        self.rng = random.Random(self.policy.seed)
        self.pool = None if executor.is_async else concurrent.futures.ThreadPoolExecutor(
            self.policy.concurrency.max, thread_name_prefix="extract")
        self.tasks: dict[asyncio.Task[None], Budget] = {}  # each packed batch's task, and its tree's budget
        self.unstarted = 0  # root batches whose first call has not got a slot yet
        self.t0: float | None = None
        self._changed: asyncio.Event | None = None
        self.crashed: BaseException | None = None  # what a batch's task raised that no policy handles
        self._watcher: asyncio.Task[None] | None = None

    def add(self, batches: Sequence[DocumentBatch]) -> None:
        """Start ``batches`` (their documents new to the run); call it in the run's loop."""
        loop = asyncio.get_running_loop()
        ids = [i for b in batches for i in b.document_ids]
        running = [i for i in ids if i in self.outcomes and self.outcomes[i].status == "pending"]
        if len(set(ids)) != len(ids) or running:  # a document may run again once its earlier run is over
            raise ValueError("a document id appears in more than one batch (or twice in one)")
        for batch in batches:
            self.limiter.check(batch.budget_tokens)
        if self.t0 is None:
            self.t0 = loop.time()
            self.metrics.start()
            self._changed = asyncio.Event()
            batches = _probe_first(batches, self.policy.concurrency.max)
        self.book.add(ids)
        if self.stopping is not None:
            return  # a halted run sends nothing more: the new documents stay pending
        for batch in batches:
            budget = Budget(self.policy.split.budget(batch.batch_size))
            task = loop.create_task(self._root(batch, budget))
            self.tasks[task] = budget
            self.unstarted += 1
            task.add_done_callback(self._done)
        if self.stop is not None and self._watcher is None and not _virtual(loop):
            self._watcher = loop.create_task(self._watch_stop())

    def _done(self, task: asyncio.Task[None]) -> None:
        self._started(self.tasks.pop(task))
        error = None if task.cancelled() else task.exception()
        if error is not None and self.crashed is None:
            self.crashed = error  # a bug, not a provider's error: the run fails with it
            self.halt(error)
        self._notify()

    def _started(self, budget: Budget) -> None:
        """A packed batch's first call got a slot (or it ended without one)."""
        if not budget.started:
            budget.started = True
            self.unstarted -= 1
            self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def settle(self, low_water: int = 0) -> None:
        """Wait until every batch is done, or (``low_water`` > 0) fewer than ``low_water`` batches
        wait for their first call: time to add more. Once the run has halted, until the calls in
        flight are over (their answers kept, their records written)."""
        while self.tasks and (self.stopping is not None or not 0 < low_water or self.unstarted >= low_water):
            if self.stop is not None and self.stop.is_set():
                self.halt(StopRequested(STOP_REQUESTED))
            assert self._changed is not None
            self._changed.clear()
            await self._changed.wait()
        if self.crashed is not None:
            raise self.crashed

    async def _watch_stop(self) -> None:
        assert self.stop is not None
        while self.stopping is None and not self.stop.is_set():
            await asyncio.sleep(_STOP_POLL)
        if self.stop.is_set():
            self.halt(StopRequested(STOP_REQUESTED))

    def halt(self, error: BaseException) -> None:
        """Send nothing more: calls with the provider finish and are kept; every task waiting for a
        slot, the rate limiter or a backoff is cancelled (its documents stay pending)."""
        self.stopping = self.stopping or error
        if self.report.stop_reason is None:
            self.report.stop_reason = error.args[0] if isinstance(error, StopRequested) else \
                redact(f"{type(error).__name__}: {error}")
        for task, budget in list(self.tasks.items()):
            if not budget.sending:
                task.cancel()
        self._notify()

    async def abort(self) -> None:
        """Cancel everything, calls in flight included (Ctrl-C); a call already sent is recorded."""
        if self.report.stop_reason is None:
            self.report.stop_reason = "cancelled"
        self.stopping = self.stopping or asyncio.CancelledError()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self, now: float | None = None) -> ExecutionReport:
        """The report with the run's clock (``now``: the loop's time, default the running loop's)
        and pace figures as they are now."""
        report = self.report
        if self.t0 is not None:
            report.seconds = (asyncio.get_running_loop().time() if now is None else now) - self.t0
        report.max_concurrency_seen = self.gate.max_seen
        report.concurrency_history = list(self.gate.history)
        report.breaker_trips = self.breaker.total_trips
        return report

    def close(self) -> None:
        """End the run: metrics finished, worker threads released, progress closed."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self.t0 is not None:
            self.metrics.finish()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.book.close()

    async def run_all(self, batches: Sequence[DocumentBatch]) -> ExecutionReport:
        """``batches`` to the end (the one-shot run of :meth:`Executor.run_async`)."""
        try:
            self.add(batches)
            await self.settle()
        except asyncio.CancelledError:
            await asyncio.shield(self.abort())
            raise
        finally:
            report = self.snapshot()
            self.close()
        if report.stop_reason is not None:
            raise RunStopped(report.stop_reason, report)
        return report


def _probe_first(batches: Sequence[DocumentBatch], concurrency: int) -> Sequence[DocumentBatch]:
    """The run's first call goes alone (a bad key costs one call, and a provider's first reply says
    its limits): where calls then go concurrently, it carries one document, not a whole batch, so
    the others wait a short call's time for it, not a long one's (its batch's other documents follow
    as a batch of their own)."""
    if concurrency < 2 or not batches or batches[0].batch_size < 2:
        return batches
    first = batches[0]
    ids = first.document_ids
    return [sub_batch(first, ids[:1], ".probe"), sub_batch(first, ids[1:], ".rest"), *batches[1:]]


def _virtual(loop: asyncio.AbstractEventLoop) -> bool:
    from toolkit.execution._vclock import VirtualTimeLoop

    return isinstance(loop, VirtualTimeLoop)


