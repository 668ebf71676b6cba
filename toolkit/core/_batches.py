"""The batch-level models of the original design, kept as the public contract.

``DocumentBatch`` is a work item whose status changes as it is processed; the other value types are
plain dataclasses. Speedup is only computed against a :class:`Baseline` that was measured.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from toolkit.core._counts import Counts
from toolkit.core._documents import Document, Dropped, Entity, Relationship

_batch_numbers = itertools.count(1)


def check_token_count(token_count: object) -> None:
    """A token count is a non-negative int (``TypeError`` / ``ValueError`` otherwise)."""
    if isinstance(token_count, bool) or not isinstance(token_count, int):
        raise TypeError(f"token_count must be int, got {type(token_count).__name__}")
    if token_count < 0:
        raise ValueError(f"token_count must be >= 0, got {token_count}")


def new_batch_id() -> str:
    """Short, process-unique, sortable batch id (``b000001``...)."""
    return f"b{next(_batch_numbers):06d}"


class BatchStatus(Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    SPLIT = "split"


# A batch is retried by going PROCESSING -> PENDING; COMPLETED, FAILED and SPLIT are final.
_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.PENDING: frozenset({BatchStatus.PROCESSING, BatchStatus.SPLIT, BatchStatus.FAILED}),
    BatchStatus.PROCESSING: frozenset(
        {BatchStatus.PENDING, BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.SPLIT}
    ),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.SPLIT: frozenset(),
}


@dataclass
class DocumentBatch:
    """Documents packed for one LLM call.

    ``total_token_count`` counts document text only (the original contract); ``budget_tokens`` adds
    what the packer reserves: the instruction prompt once (``base_reserve``) and framing plus
    expected output for every document (``per_document_reserve``).
    """

    batch_id: str = field(default_factory=new_batch_id)
    document_ids: list[str] = field(default_factory=list)
    batch_size: int = 0
    total_token_count: int = 0
    creation_timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    processing_status: BatchStatus = BatchStatus.PENDING
    retry_count: int = 0
    base_reserve: int = 0
    per_document_reserve: int = 0
    oversize: bool = False
    documents: list[Document] = field(default_factory=list, repr=False)
    token_counts: list[int] = field(default_factory=list, repr=False)
    max_tokens: int | None = None  # the output cap fixed for the call this batch is sent in (None: default)
    charge: int | None = None  # what the rate limiter counts for that call (None: budget_tokens)

    def for_call(self, max_tokens: int | None, charge: int) -> DocumentBatch:
        """This batch prepared for one call: a copy carrying its output cap and its charge from
        preparation to the call (the allowance may change while the call waits for the limiter)."""
        return dataclasses.replace(self, max_tokens=max_tokens, charge=charge)

    @property
    def call_tokens(self) -> int:
        """What the rate limiter counts for a call on this batch."""
        return self.budget_tokens if self.charge is None else self.charge

    def add_document(self, document: Document | str, token_count: int) -> None:
        """Append a document (or a bare id, as in the original contract) and its token count."""
        check_token_count(token_count)
        if isinstance(document, Document):
            self.documents.append(document)
            doc_id = document.id
        elif isinstance(document, str) and document:
            doc_id = document
        else:
            raise TypeError(f"expected a Document or a document id, got {document!r}")
        self.document_ids.append(doc_id)
        self.token_counts.append(token_count)
        self.batch_size += 1
        self.total_token_count += token_count

    @property
    def budget_tokens(self) -> int:
        """Tokens this batch claims from the budget: prompt + documents + expected output."""
        return self.base_reserve + self.total_token_count + self.batch_size * self.per_document_reserve

    def is_within_budget(self, token_budget: int = 8192) -> bool:
        return self.budget_tokens <= token_budget

    def transition(self, status: BatchStatus) -> None:
        """Move to ``status``; raises ``ValueError`` on a transition the lifecycle does not allow."""
        if status not in _TRANSITIONS[self.processing_status]:
            raise ValueError(
                f"batch {self.batch_id}: cannot go from {self.processing_status.name} to {status.name}"
            )
        if self.processing_status is BatchStatus.PROCESSING and status is BatchStatus.PENDING:
            self.retry_count += 1
        self.processing_status = status


@dataclass
class BatchExtractionResult:
    """Per-document output of one batch. A document absent from ``per_document_entities`` has no
    result (it failed or is missing); an empty list means the document really has no entities."""

    batch_id: str
    per_document_entities: dict[str, list[Entity]] = field(default_factory=dict)
    per_document_relationships: dict[str, list[Relationship]] = field(default_factory=dict)
    per_document_dropped: dict[str, list[Dropped]] = field(default_factory=dict)  # what validation did not keep
    processing_time: float = 0.0
    success_status: bool = True
    retry_count: int = 0
    error_message: str | None = None
    failed_document_ids: dict[str, str] = field(default_factory=dict)  # id -> reason
    tokens_in: int | None = None  # usage reported by the model, when it does
    tokens_out: int | None = None
    tokens_cached: int | None = None  # of tokens_in, read from the provider's prompt cache
    validation: Counts | None = None  # what validation of the reply kept and dropped

    def get_all_entities(self) -> list[Entity]:
        return [e for entities in self.per_document_entities.values() for e in entities]

    def get_all_relationships(self) -> list[Relationship]:
        return [r for rels in self.per_document_relationships.values() for r in rels]

    def get_entity_count_by_document(self) -> dict[str, int]:
        return {doc_id: len(entities) for doc_id, entities in self.per_document_entities.items()}


@dataclass(frozen=True)
class Baseline:
    """A measured one-document-per-call reference: ``seconds`` of wall time for ``documents`` docs."""

    seconds: float
    documents: int
    source: str = "measured"

    def __post_init__(self) -> None:
        if self.documents <= 0 or self.seconds <= 0:
            raise ValueError("a baseline needs documents > 0 and seconds > 0 from a real run")

    @property
    def seconds_per_document(self) -> float:
        return self.seconds / self.documents

    @classmethod
    def from_metrics(cls, metrics: ProcessingMetrics, source: str = "one-document-per-call run") -> Baseline:
        return cls(metrics.elapsed_seconds, metrics.total_documents_processed, source)


@dataclass
class ProcessingMetrics:
    """Run statistics. ``speedup_factor`` stays ``None`` until compared with a measured baseline."""

    total_batches_processed: int = 0
    total_documents_processed: int = 0
    average_batch_processing_time: float = 0.0
    speedup_factor: float | None = None
    entity_extraction_rate_per_batch: float = 0.0
    zero_entity_documents_count: int = 0
    failed_batches_count: int = 0
    retry_attempts_total: int = 0
    total_entities: int = 0
    failed_documents_count: int = 0
    wall_seconds: float | None = None  # set by the run; None means "sum of batch times"

    @property
    def total_processing_time(self) -> float:
        return self.average_batch_processing_time * self.total_batches_processed

    @property
    def elapsed_seconds(self) -> float:
        """Wall time of the run when known (concurrent runs), else the summed batch time."""
        return self.wall_seconds if self.wall_seconds is not None else self.total_processing_time

    @property
    def entities_per_document(self) -> float:
        ok = self.total_documents_processed - self.failed_documents_count
        return self.total_entities / ok if ok else 0.0

    def update_with_batch(self, result: BatchExtractionResult, batch_size: int) -> None:
        """Fold one batch result in. Failed documents are counted as failed, never as zero-entity."""
        n = self.total_batches_processed = self.total_batches_processed + 1
        self.total_documents_processed += batch_size
        self.average_batch_processing_time += (result.processing_time - self.average_batch_processing_time) / n
        entities = len(result.get_all_entities())
        self.total_entities += entities
        self.entity_extraction_rate_per_batch += (entities - self.entity_extraction_rate_per_batch) / n
        counts = result.get_entity_count_by_document()
        self.zero_entity_documents_count += sum(1 for c in counts.values() if c == 0)
        self.failed_documents_count += batch_size - len(counts)
        if not result.success_status:
            self.failed_batches_count += 1
        self.retry_attempts_total += result.retry_count

    def calculate_speedup(self, baseline: Baseline | ProcessingMetrics | None) -> float | None:
        """Seconds per document of ``baseline`` over this run's; ``None`` without a baseline.

        A bare number is refused: a speedup is only meaningful against a run that was measured.
        """
        if baseline is None or self.total_documents_processed == 0 or self.elapsed_seconds <= 0:
            self.speedup_factor = None
            return None
        if isinstance(baseline, ProcessingMetrics):
            baseline = Baseline.from_metrics(baseline)
        if not isinstance(baseline, Baseline):
            raise TypeError(
                "calculate_speedup() needs a measured Baseline or the ProcessingMetrics of a "
                f"one-document-per-call run, not {type(baseline).__name__}"
            )
        mine = self.elapsed_seconds / self.total_documents_processed
        self.speedup_factor = baseline.seconds_per_document / mine
        return self.speedup_factor
