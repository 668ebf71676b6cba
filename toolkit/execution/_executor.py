"""The retry executor: runs ``extract_fn(batch)`` over packed batches, concurrently and safely.

It knows nothing of LLMs. ``extract_fn`` takes a :class:`DocumentBatch` and returns a
:class:`BatchExtractionResult` (or an awaitable of one), or raises; exceptions are sorted by
:func:`toolkit.execution._errors.classify`, and what follows each call is decided by the pure
:func:`toolkit.execution._decisions.next_action`. Guarantees:

* every document ends in exactly one outcome: ``extracted``, ``failed`` (with its last error), or
  ``pending`` when the run stopped before reaching it (fatal error, provider down, Ctrl-C): a
  pending document was never given up on and a resumed run picks it up;
* a reply that covers only some documents keeps those and re-sends only the missing ones; ids that
  were not asked for are dropped and counted; nothing becomes "zero entities" because a call failed;
* cost is bounded: a packed batch of n documents costs at most ``max_calls_per_document * n`` calls
  (see :mod:`toolkit.execution._policies`); a fatal error costs one call per run (the first call goes alone).

An :class:`Executor` holds settings only; each run keeps its state in a run object of its own, so
one executor can run twice at once. A sync ``extract_fn`` runs in worker threads with the caller's
context variables (``dspy.context`` overrides included), as DSPy's parallelizer does.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from toolkit.core import BatchExtractionResult, Document, DocumentBatch
from toolkit.execution._calls import ExtractFn, PrepareFn, call_counts
from toolkit.execution._limits import ConcurrencyGate, Gate, Pacing, SlidingWindowLimiter, Window
from toolkit.execution._loophost import LoopHost
from toolkit.execution._metrics import RunMetrics
from toolkit.execution._outcomes import (
    DocumentOutcome,
    ExecutionReport,
    Progress,
    ProgressFn,
    RunStopped,
    Status,
    result_from_outcomes,
)
from toolkit.execution._policies import ExecutionPolicy, RetryPolicy
from toolkit.execution._stream import ExecutionStream

__all__ = ["DocumentOutcome", "ExecutionReport", "ExecutionStream", "Executor", "Progress", "RunStopped", "Status",
           "call_counts", "extract_batch_with_retry", "result_from_outcomes"]


def _is_async(fn: ExtractFn) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    method = getattr(fn, "__call__", None)  # noqa: B004 - not a callable check: is its __call__ async?
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(method)


def _own_pace(policy: ExecutionPolicy) -> tuple[Gate, Window]:
    """A run's own gate and window (the default :data:`~toolkit.execution._limits.Pacing`)."""
    return ConcurrencyGate(policy.concurrency), SlidingWindowLimiter(policy.rate)


def _as_is(batch: DocumentBatch) -> DocumentBatch:
    return batch


class Executor:
    """Runs ``extract_fn`` over batches under ``policy``; ``metrics`` receives one row per call.

    ``progress``: ``None`` shows a tqdm bar for runs of 200+ documents, ``False`` shows nothing, a
    callable receives a :class:`Progress` after every finished document. ``on_outcome`` receives
    each document's final :class:`DocumentOutcome` as soon as it is decided (to store it at once).
    ``prepare(batch)`` readies a batch for one call (:meth:`DocumentBatch.for_call`: its output cap
    and what the rate limiter charges; default: the batch as packed). ``pacing(policy)`` gives a
    run its concurrency gate and rate limiter (default: its own; a scale-out engine shares global
    ones across processes, see :mod:`toolkit.jobs.scaleout`).

    :meth:`run` runs a list of batches to the end; :meth:`stream` starts a run that is fed batches
    as they come (:class:`~toolkit.execution._stream.ExecutionStream`, one pace for the whole run).
    """

    def __init__(
        self,
        extract_fn: ExtractFn,
        policy: ExecutionPolicy | None = None,
        metrics: RunMetrics | None = None,
        progress: ProgressFn | bool | None = None,
        on_outcome: Callable[[DocumentOutcome], None] | None = None,
        prepare: PrepareFn | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        self.extract_fn: ExtractFn = extract_fn
        self.is_async = _is_async(extract_fn)
        self.policy = policy or ExecutionPolicy()
        self.metrics = metrics or RunMetrics()
        self.progress = progress
        self.on_outcome = on_outcome
        self.prepare: PrepareFn = prepare or _as_is
        self.pacing: Pacing = pacing or _own_pace
        self.report: ExecutionReport | None = None  # the last run's, also after Ctrl-C

    def run(self, batches: Sequence[DocumentBatch], virtual: bool = False,
            stop: threading.Event | None = None) -> ExecutionReport:
        """Run to completion (on a virtual clock if ``virtual``). Works inside Jupyter's loop too
        (in a thread of its own, with the caller's context variables). ``stop``: once set, no call
        starts; the run ends with :class:`RunStopped` (calls already sent finish and are kept)."""
        host = LoopHost(virtual)
        try:
            return host.run(self.run_async(batches, stop))
        finally:
            host.close()

    async def run_async(self, batches: Sequence[DocumentBatch], stop: threading.Event | None = None) -> ExecutionReport:
        stream = self.stream(stop)
        return await stream.run_all(batches)

    def stream(self, stop: threading.Event | None = None) -> ExecutionStream:
        """A run fed batches with :meth:`ExecutionStream.add` (in the loop it runs on)."""
        stream = ExecutionStream(self, stop)
        self.report = stream.report
        return stream


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
    from toolkit.execution._policies import ConcurrencyPolicy

    base = policy or ExecutionPolicy(concurrency=ConcurrencyPolicy(max=1))
    policy = replace(base, retry=RetryPolicy(max_attempts=max_retries + 1, delays=tuple(retry_delays) or (0.0,),
                                             jitter=base.retry.jitter, max_delay=base.retry.max_delay))
    batch = DocumentBatch()
    for document in documents:
        batch.add_document(document, 0)
    runner = Executor(lambda b: extract_fn(list(b.documents)), policy, progress=False)
    return runner.run([batch], virtual=virtual).to_batch_result(batch.batch_id)
