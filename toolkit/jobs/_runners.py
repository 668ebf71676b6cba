"""Where a run's chunks of documents are extracted: a runner takes chunks and gives back what came
of them, through the same two sinks (each document's outcome, each call's record), so the main
job is one code path whatever the runner.

:class:`LocalRunner` runs each chunk in this process as it is submitted, handing every outcome on
as soon as it is decided. :class:`toolkit.jobs.scaleout.RayRunner` runs chunks on a pool of Ray workers
(the same packer, executor, DSPy module and validation in each) and hands their outcomes on as
chunks come back; :class:`toolkit.jobs.batchapi.BatchApiRunner` sends them through a provider's
batch API. All pack a chunk with the same :class:`~toolkit.packing.Packer`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from toolkit.core import Counts, Document, Mode
from toolkit.execution import AttemptRecord, DocumentOutcome, ExecutionPolicy, ProgressFn, RunMetrics
from toolkit.packing import Packer, PackingSettings, PackResult

if TYPE_CHECKING:
    from toolkit.jobs._service import ServiceRun

OutcomeSink = Callable[[DocumentOutcome], None]
CallSink = Callable[[Sequence[AttemptRecord]], None]
RateLimits = dict[str, Any]  # {rpm, tpm, window, source}: the limits a run paced by


@dataclass
class ChunkResult:
    """What extracting one chunk did: its documents' outcomes, its calls' records, how many
    batches, its seconds (the run's clock: virtual for an emulated LM) and why it stopped early."""

    outcomes: list[DocumentOutcome]
    attempts: list[AttemptRecord]
    batches: int
    seconds: float
    stopped: str | None = None

    @property
    def counts(self) -> Counts:
        return Counts.total(a.counts for a in self.attempts)


@dataclass
class Chunk:
    documents: list[Document]
    token_counts: list[int]
    packing: PackingSettings

    def pack(self) -> PackResult:
        return Packer(self.packing).pack(self.documents, token_counts=self.token_counts)


class RunnerFigures(TypedDict, total=False):
    """What a run's summary says of its runner: its ``mode`` always; the limits it paced by (sync
    mode); Ray's replaced workers; the batch API's jobs, failed lines and lost batches."""

    mode: Mode
    rate_limits: RateLimits | None
    workers_replaced: int
    batch_api_jobs: int
    batch_api_failed_lines: int
    batch_api_lost_batches: int


class Runner(Protocol):
    @property
    def chunk_docs(self) -> int | None: ...  # the chunk size it works best with (None: the run's)

    @property
    def failed_calls(self) -> int: ...  # calls so far that raised (for the progress bar)
    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def summary(self) -> RunnerFigures: ...
    def close(self) -> None: ...


class ChunkService(Protocol):
    """What a runner asks of the service that extracts its chunks
    (:class:`~toolkit.jobs._service.ExtractionService`)."""

    metrics: RunMetrics
    policy: ExecutionPolicy

    def feed(self, pack: PackResult | None, documents: int, low_water: int,
             progress: ProgressFn | bool | None = None, on_outcome: OutcomeSink | None = None,
             stop: threading.Event | None = None) -> ServiceRun: ...
    def rate_limits(self) -> RateLimits | None: ...
    def close(self) -> None: ...


class LocalRunner:
    """Chunks extracted in this process by ``service`` (:class:`~toolkit.jobs._service.ExtractionService`),
    as one stream: a chunk's batches join the batches still running, and :meth:`submit` returns as
    soon as the executor is about to run dry (fewer batches waiting than twice its concurrency), so
    the next chunk is read and packed while calls are in flight. The run's pace (rate-limit window,
    concurrency, breaker, pauses) is the service's, for all chunks. ``stop``: the run's stop event."""

    chunk_docs = None

    def __init__(self, service: ChunkService, stop: threading.Event | None = None) -> None:
        self.service = service
        self.stop = stop
        self._record: CallSink | None = None
        self._recorded = 0  # the service's attempts handed to the store so far

    @property
    def failed_calls(self) -> int:
        return self.service.metrics.failed_attempts

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        low_water = 2 * self.service.policy.concurrency.max
        yield self._step(chunk.pack(), len(chunk.documents), low_water, decided, record)

    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        yield self._step(None, 0, 0, decided, record)

    def _step(self, pack: PackResult | None, documents: int, low_water: int, decided: OutcomeSink,
              record: CallSink) -> ChunkResult:
        self._record = record
        try:
            run = self.service.feed(pack, documents, low_water, progress=False, on_outcome=decided, stop=self.stop)
        finally:  # the calls made are recorded, also when Ctrl-C ends the step
            self._flush()
        batches = len(pack.batches) if pack is not None else 0
        return ChunkResult(run.report.outcomes, run.attempts, batches, run.report.seconds, run.stopped)

    def _flush(self) -> None:
        attempts = self.service.metrics.attempts
        if self._record is not None and len(attempts) > self._recorded:
            self._record(attempts[self._recorded:])
        self._recorded = len(attempts)

    def summary(self) -> RunnerFigures:
        return {"mode": "sync", "rate_limits": self.service.rate_limits()}

    def close(self) -> None:
        """Ends the service's run; calls it cancels are recorded."""
        try:
            self.service.close()
        finally:
            self._flush()
