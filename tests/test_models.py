from __future__ import annotations

import pytest

from toolkit import (
    Baseline,
    BatchExtractionResult,
    BatchStatus,
    Document,
    DocumentBatch,
    Entity,
    ProcessingMetrics,
    Relationship,
)


def ent(text: str, doc: str) -> Entity:
    return Entity(text, "DISEASE", doc)


def test_document_requires_id_and_text():
    with pytest.raises(ValueError):
        Document("", "text")
    with pytest.raises(TypeError):
        Document("d1", None)  # type: ignore[arg-type]


def test_document_batch_counts_and_budget():
    batch = DocumentBatch(base_reserve=600, per_document_reserve=272)
    batch.add_document("d1", 1000)
    batch.add_document(Document("d2", "text"), 500)
    assert batch.document_ids == ["d1", "d2"]
    assert (batch.batch_size, batch.total_token_count) == (2, 1500)
    assert batch.budget_tokens == 600 + 1500 + 2 * 272
    assert batch.is_within_budget(2644) and not batch.is_within_budget(2643)


def test_document_batch_original_contract_without_reserves():
    batch = DocumentBatch()
    batch.add_document("d1", 8192)
    assert batch.is_within_budget(8192) and not batch.is_within_budget(8191)
    with pytest.raises(ValueError):
        batch.add_document("d2", -1)
    with pytest.raises(TypeError):
        batch.add_document("d3", 1.5)  # type: ignore[arg-type]


def test_batch_ids_are_unique():
    assert len({DocumentBatch().batch_id for _ in range(100)}) == 100


def test_status_lifecycle_and_retry_count():
    batch = DocumentBatch()
    assert batch.processing_status is BatchStatus.PENDING
    batch.transition(BatchStatus.PROCESSING)
    batch.transition(BatchStatus.PENDING)  # a retry
    assert batch.retry_count == 1
    batch.transition(BatchStatus.PROCESSING)
    batch.transition(BatchStatus.COMPLETED)
    for status in BatchStatus:
        with pytest.raises(ValueError, match="cannot go from COMPLETED"):
            batch.transition(status)


def test_pending_cannot_complete_without_processing():
    with pytest.raises(ValueError):
        DocumentBatch().transition(BatchStatus.COMPLETED)


def test_extraction_result_accessors():
    result = BatchExtractionResult(
        "b1",
        per_document_entities={"d1": [ent("asthma", "d1"), ent("copd", "d1")], "d2": []},
        per_document_relationships={"d1": [Relationship("asthma", "copd", "COMORBID", "d1")]},
    )
    assert [e.text for e in result.get_all_entities()] == ["asthma", "copd"]
    assert len(result.get_all_relationships()) == 1
    assert result.get_entity_count_by_document() == {"d1": 2, "d2": 0}


def test_metrics_update_counts_failed_documents_apart_from_zero_entity_ones():
    metrics = ProcessingMetrics()
    ok = BatchExtractionResult("b1", {"d1": [ent("x", "d1")], "d2": []}, processing_time=2.0, retry_count=1)
    partial = BatchExtractionResult(
        "b2", {"d3": [ent("y", "d3"), ent("z", "d3")]}, processing_time=4.0, success_status=False,
        failed_document_ids={"d4": "timeout"},
    )
    metrics.update_with_batch(ok, 2)
    metrics.update_with_batch(partial, 2)
    assert metrics.total_batches_processed == 2
    assert metrics.total_documents_processed == 4
    assert metrics.average_batch_processing_time == pytest.approx(3.0)
    assert metrics.entity_extraction_rate_per_batch == pytest.approx(1.5)
    assert metrics.zero_entity_documents_count == 1  # d2 only: d4 failed, it is not "zero entities"
    assert metrics.failed_documents_count == 1
    assert metrics.failed_batches_count == 1
    assert metrics.retry_attempts_total == 1
    assert metrics.entities_per_document == pytest.approx(1.0)


def test_speedup_needs_a_measured_baseline():
    metrics = ProcessingMetrics()
    metrics.update_with_batch(BatchExtractionResult("b", {f"d{i}": [] for i in range(10)}, processing_time=5.0), 10)
    assert metrics.calculate_speedup(None) is None and metrics.speedup_factor is None
    with pytest.raises(TypeError, match="measured"):
        metrics.calculate_speedup(7.2)  # type: ignore[arg-type]
    baseline = ProcessingMetrics()
    for i in range(4):
        baseline.update_with_batch(BatchExtractionResult(f"s{i}", {f"d{i}": []}, processing_time=2.0), 1)
    assert metrics.calculate_speedup(baseline) == pytest.approx(4.0)  # 2.0 s/doc vs 0.5 s/doc
    assert metrics.calculate_speedup(Baseline(seconds=10.0, documents=10)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        Baseline(seconds=0, documents=3)
