"""The figures of one executed set of batches, as one JSON-ready dict (main job and experiments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.service import ServiceRun


def extraction_summary(run: ServiceRun, wall_seconds: float, emulated: bool = False) -> dict[str, Any]:
    """Counts, quality signals, tokens and speed of ``run``; ``lost`` must be 0."""
    report, counts = run.report, run.validation
    outcomes = report.outcomes
    n = run.documents
    extracted = [o for o in outcomes if o.status == "extracted"]
    entities = sum(len(o.entities) for o in extracted)
    judged = counts.entities + counts.ungrounded + counts.leaks
    seconds = report.seconds if emulated else wall_seconds
    lost = n - len(outcomes) + (report.pending if run.stopped is None else 0)
    return {
        "documents": n,
        "extracted": len(extracted),
        "failed": report.failed,
        "pending": report.pending,
        "lost": lost,
        "batches": len(run.pack.batches),
        "calls": report.calls,
        "retries": report.retries,
        "splits": report.splits,
        "requeued": report.requeued,
        "entities": entities,
        "entities_per_doc": entities / len(extracted) if extracted else 0.0,
        "zero_entity_docs": sum(1 for o in extracted if not o.entities),
        "grounded_rate": counts.entities / judged if judged else None,
        "ungrounded": counts.ungrounded,
        "leaks": counts.leaks,
        "repaired": counts.repaired,
        "dropped": counts.dropped,
        "missing_ids": counts.missing_ids,
        "unknown_ids": counts.unknown_ids,
        "loops_ended": counts.loops_ended,
        "tokens_in": sum(a.tokens_in or 0 for a in run.attempts),
        "tokens_out": sum(a.tokens_out or 0 for a in run.attempts),
        "wall_seconds": wall_seconds,
        **({"virtual_seconds": report.seconds} if emulated else {}),
        "docs_per_second": len(extracted) / seconds if seconds > 0 else None,
        "stop_reason": run.stopped,
    }
