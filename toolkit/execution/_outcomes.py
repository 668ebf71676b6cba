"""What becomes of each document of a run: its outcome, the run's report, and the book that keeps
them (each document decided once, handed on at once, counted and shown as progress)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from toolkit.core import BatchExtractionResult, Counts, DocumentBatch, Dropped, Entity, Relationship

Status = Literal["extracted", "failed", "pending"]
ProgressFn = Callable[["Progress"], None]


@dataclass
class DocumentOutcome:
    id: str
    status: Status = "pending"
    entities: list[Entity] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    reason: str | None = None
    dropped: list[Dropped] = field(default_factory=list)  # mentions validation did not keep (leaks, ungrounded)
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
    """What a run did, per document (in input order) and in total (``counts``: the sum of its calls')."""

    outcomes: list[DocumentOutcome]
    counts: Counts = field(default_factory=Counts)
    duplicated: int = 0  # outcomes set twice for one document (must stay 0)
    breaker_trips: int = 0
    max_concurrency_seen: int = 0
    concurrency_history: list[tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0  # on the loop's clock (virtual in virtual runs)
    stop_reason: str | None = None

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    extracted = property(lambda self: self.count("extracted"))
    failed = property(lambda self: self.count("failed"))
    pending = property(lambda self: self.count("pending"))
    calls = property(lambda self: self.counts.calls)
    retries = property(lambda self: self.counts.retries)

    def summary(self) -> dict[str, Any]:
        n = len(self.outcomes)
        counts = self.counts
        return {
            "documents": n, "extracted": self.extracted, "failed": self.failed, "pending": self.pending,
            **{k: getattr(counts, k) for k in ("calls", "retries", "splits", "requeued", "extra_ids")},
            "calls_per_document": counts.calls / n if n else 0.0, "duplicated": self.duplicated,
            "breaker_trips": self.breaker_trips, "max_concurrency_seen": self.max_concurrency_seen,
            "seconds": self.seconds, "stop_reason": self.stop_reason,
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


class OutcomeNotKept(Exception):
    """``on_outcome`` failed: the document's outcome could not be kept (the store failed)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class OutcomeBook:
    """The outcomes of one run's documents (``ids``, in input order) and its report."""

    def __init__(self, ids: Sequence[str], on_outcome: Callable[[DocumentOutcome], None] | None,
                 progress: ProgressFn | bool | None) -> None:
        self.outcomes = {i: DocumentOutcome(i) for i in ids}
        self.report = ExecutionReport(outcomes=[self.outcomes[i] for i in ids])
        self.on_outcome = on_outcome
        self.progress = progress
        self.bar = _make_bar(progress, len(ids))

    def add(self, ids: Sequence[str]) -> None:
        """More documents to the run (a stream's next batches), pending, in input order."""
        for i in ids:
            self.outcomes[i] = DocumentOutcome(i)
            self.report.outcomes.append(self.outcomes[i])
        if self.bar is None and ids:
            self.bar = _make_bar(self.progress, len(self.report.outcomes))
        elif self.bar is not None:
            self.bar.total = len(self.report.outcomes)
            self.bar.refresh()

    def absorb(self, batch: DocumentBatch, result: BatchExtractionResult) -> tuple[str, ...]:
        """Keep the documents the reply answered; return the ones it left out."""
        answered = result.per_document_entities
        for doc_id in batch.document_ids:
            if doc_id in answered and doc_id not in result.failed_document_ids:
                entities = [e for e in answered[doc_id] if e.source_document_id == doc_id]
                relationships = result.per_document_relationships.get(doc_id, [])
                self.finish(doc_id, "extracted", entities=entities, relationships=relationships,
                            dropped=result.per_document_dropped.get(doc_id, []))
        return tuple(i for i in batch.document_ids if self.outcomes[i].status == "pending")

    def fail(self, ids: Sequence[str], reason: str | None) -> None:
        """Decide ``ids`` failed, for ``reason``."""
        for doc_id in ids:
            self.finish(doc_id, "failed", reason=reason)

    def finish(self, doc_id: str, status: Status, **values: Any) -> None:
        """Decide ``doc_id`` (once: a second decision is counted as ``duplicated``, and ignored)."""
        outcome = self.outcomes[doc_id]
        if outcome.status != "pending":
            self.report.duplicated += 1
            return
        outcome.status = status
        for key, value in values.items():
            setattr(outcome, key, value)
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception as exc:  # any failure of the sink: handed to the run, which stops
                outcome.status = "pending"  # not kept, so not decided: a resumed run does it again
                raise OutcomeNotKept(exc) from exc
        report = self.report
        if self.bar is not None:
            self.bar.update(1)
        elif callable(self.progress):
            self.progress(Progress(len(report.outcomes), report.extracted, report.failed, report.calls, report.retries))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Bar(Protocol):
    """The part of a tqdm progress bar the book uses."""

    total: int

    def update(self, n: int = 1) -> object: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...


def _make_bar(progress: ProgressFn | bool | None, total: int) -> _Bar | None:
    if progress is None and total >= 200:
        from tqdm.auto import tqdm

        bar: _Bar = tqdm(total=total, unit="doc", desc="extract", leave=False)
        return bar
    return None
