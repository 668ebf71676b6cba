"""Where a run's chunks of documents are extracted: an engine takes chunks and gives back what came
of them, through the same two sinks (each document's outcome, each call's record), so the main
job is one code path whatever the engine.

:class:`LocalRunner` runs each chunk in this process as it is submitted, handing every outcome on
as soon as it is decided. :class:`toolkit.jobs.scaleout.RayRunner` runs chunks on a pool of Ray workers
(the same packer, executor, DSPy module and validation in each) and hands their outcomes on as
chunks come back. Both pack a chunk with the same :class:`~toolkit.packing._packer.Packer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.core import Counts, Document
from toolkit.execution import AttemptRecord, DocumentOutcome
from toolkit.packing import Packer, PackingSettings

OutcomeSink = Callable[[Any], None]
CallSink = Callable[[Sequence[AttemptRecord]], None]


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

    def pack(self):  # -> PackResult
        return Packer(self.packing).pack(self.documents, token_counts=self.token_counts)


class Runner(Protocol):
    chunk_docs: int | None  # the chunk size it works best with (None: the run's)
    failed_calls: int  # calls so far that raised (for the progress bar)

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def summary(self) -> dict[str, Any]: ...  # what a run's summary says of it: its "mode", and more
    def close(self) -> None: ...


class LocalRunner:
    """Chunks extracted in this process by ``service`` (:class:`~toolkit.jobs._service.ExtractionService`),
    as one stream: a chunk's batches join the batches still running, and :meth:`submit` returns as
    soon as the executor is about to run dry (fewer batches waiting than twice its concurrency), so
    the next chunk is read and packed while calls are in flight. The run's pace (rate-limit window,
    concurrency, breaker, pauses) is the service's, for all chunks. ``stop``: the run's stop event."""

    chunk_docs = None

    def __init__(self, service: Any, stop: Any = None) -> None:
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

    def _step(self, pack: Any, documents: int, low_water: int, decided: OutcomeSink, record: CallSink) -> ChunkResult:
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

    def summary(self) -> dict[str, Any]:
        return {"mode": "sync", "rate_limits": self.service.rate_limits()}

    def close(self) -> None:
        """Ends the service's run; calls it cancels are recorded."""
        try:
            self.service.close()
        finally:
            self._flush()
