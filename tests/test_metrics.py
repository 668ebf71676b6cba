from __future__ import annotations

import threading

from toolkit import AttemptRecord, BatchExtractionResult, BatchMetricsTracker, Entity, RunMetrics
from toolkit.core import Counts


def result(batch_id: str, docs: int, entities_each: int = 1) -> BatchExtractionResult:
    return BatchExtractionResult(
        batch_id,
        {f"{batch_id}-{i}": [Entity("x", "T", f"{batch_id}-{i}")] * entities_each for i in range(docs)},
        processing_time=0.5,
    )


def test_tracker_is_thread_safe():
    metrics = RunMetrics()

    def work(worker: int) -> None:
        for j in range(200):
            metrics.update_with_batch(result(f"w{worker}b{j}", 3), 3)
            metrics.record_attempt(AttemptRecord(f"w{worker}b{j}", ("a", "b", "c"), 1, "ok"))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = metrics.get_statistics()
    assert stats.total_batches_processed == 1600
    assert stats.total_documents_processed == 4800
    assert stats.total_entities == 4800
    assert len(metrics.attempts) == 1600


def test_runs_do_not_share_state():
    first, second = RunMetrics(), RunMetrics()
    first.update_with_batch(result("b1", 2), 2)
    assert second.get_statistics().total_batches_processed == 0
    assert first.run_id != second.run_id


def test_statistics_are_snapshots():
    metrics = RunMetrics()
    snapshot = metrics.get_statistics()
    metrics.update_with_batch(result("b1", 2), 2)
    assert snapshot.total_batches_processed == 0


def test_shared_instance_is_opt_in():
    BatchMetricsTracker.reset_instance()
    shared = BatchMetricsTracker.get_instance()
    assert BatchMetricsTracker.get_instance() is shared
    assert BatchMetricsTracker() is not shared
    shared.update_with_batch(result("b1", 4), 4)
    assert BatchMetricsTracker.get_instance().get_statistics().total_documents_processed == 4
    BatchMetricsTracker.reset_instance()
    assert BatchMetricsTracker.get_instance().get_statistics().total_documents_processed == 0


def test_speedup_is_none_without_baseline_and_measured_with_one():
    metrics = RunMetrics()
    metrics.update_with_batch(result("b1", 4), 4)
    assert metrics.get_statistics().speedup_factor is None
    from toolkit import Baseline

    metrics.baseline = Baseline(seconds=4.0, documents=4)  # 1 s/doc measured elsewhere
    assert metrics.get_statistics().speedup_factor == 1.0 / (0.5 / 4)


def test_attempts_to_polars():
    metrics = RunMetrics(run_id="r1")
    assert metrics.to_polars().height == 0
    metrics.record_attempt(AttemptRecord("b1", ("a",), 1, "retry", error_class="RateLimited", delay_before=2.0))
    metrics.record_attempt(AttemptRecord("b1", ("a",), 2, "ok", counts=Counts(calls=1, tokens_in=100, tokens_out=20)))
    frame = metrics.to_polars()
    assert frame.height == 2
    assert frame["outcome"].to_list() == ["retry", "ok"]
    assert set(frame["run"].to_list()) == {"r1"}


def test_attempts_frame_is_typed_whatever_its_first_rows_hold() -> None:
    """Thousands of clean calls and then one error used to break schema inference."""
    metrics = RunMetrics()
    for i in range(150):
        metrics.record_attempt(AttemptRecord(f"b{i}", ("a",), 1, "ok"))
    metrics.record_attempt(AttemptRecord("late", ("a", "b"), 2, "error", counts=Counts(tokens_in=5),
                                         error_class="rate_limited", error="429"))
    frame = metrics.to_polars()
    assert frame.height == 151 and frame["error_class"].to_list()[-1] == "rate_limited"
    assert RunMetrics().to_polars().schema == frame.schema


def test_chaos_with_rare_faults_reports(capsys) -> None:
    from toolkit.cli import main

    assert main(["chaos", "--docs", "5000", "--fault-rate", "0.001", "--seed", "0", "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["lost"] == 0 and summary["extracted"] == 5000
