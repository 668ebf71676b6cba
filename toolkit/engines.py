"""Where a run's chunks of documents are extracted: an engine takes chunks and gives back what came
of them, through the same two sinks (each document's outcome, each call's record), so the main
job is one code path whatever the engine.

:class:`LocalEngine` runs each chunk in this process as it is submitted, handing every outcome on
as soon as it is decided. :class:`toolkit.scaleout.RayEngine` runs chunks on a pool of Ray workers
(the same packer, executor, DSPy module and validation in each) and hands their outcomes on as
chunks come back. Both pack a chunk with the same :class:`~toolkit.packer.Packer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.counts import Counts
from toolkit.documents import Document
from toolkit.metrics import AttemptRecord
from toolkit.outcomes import DocumentOutcome
from toolkit.packer import Packer, PackingSettings

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


class Engine(Protocol):
    chunk_docs: int | None  # the chunk size it works best with (None: the run's)
    failed_calls: int  # calls so far that raised (for the progress bar)

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]: ...
    def summary(self) -> dict[str, Any]: ...  # what a run's summary says of it: its "mode", and more
    def close(self) -> None: ...


class LocalEngine:
    """Chunks extracted in this process, one after another, by ``service``
    (:class:`~toolkit.service.ExtractionService`)."""

    chunk_docs = None

    def __init__(self, service: Any) -> None:
        self.service = service

    @property
    def failed_calls(self) -> int:
        return self.service.metrics.failed_attempts

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        metrics = self.service.metrics
        seen = len(metrics.attempts)
        try:
            run = self.service.execute(chunk.pack(), len(chunk.documents), progress=False, on_outcome=decided)
        finally:  # the calls made are recorded, also when Ctrl-C ends the chunk
            record(metrics.attempts[seen:])
        yield ChunkResult(run.report.outcomes, run.attempts, len(run.pack.batches), run.report.seconds, run.stopped)

    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        return iter(())

    def summary(self) -> dict[str, Any]:
        return {"mode": "sync"}

    def close(self) -> None:
        pass
