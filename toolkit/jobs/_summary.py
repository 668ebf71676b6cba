"""A main-job run's summary: its documents from the store (the truth), its counts summed over its
chunks, its cost, speed and the share of the rate limits' bound it reached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.core import Counts, Prices
from toolkit.jobs._report import cost_summary, counts_summary, limit_bound
from toolkit.jobs.batchapi import batch_api_counts, batch_api_fields

if TYPE_CHECKING:
    from toolkit.jobs._intake import Intake
    from toolkit.jobs._runners import ChunkResult, Runner
    from toolkit.lm import ResolvedLM
    from toolkit.store import Store


def run_summary(run_id: str, db: Store, gate: Intake, expected: set[str], runs: list[ChunkResult], wall: float,
                resolved: ResolvedLM, stopped: str | None, prices: Prices | None, engine: Runner) -> dict[str, Any]:
    """The run's figures: documents from the store (the truth), counts summed over its chunks
    (``expected``: the documents this session read; ``gate``: its intake's tallies)."""
    statuses = db.statuses(run_id)
    final = {i for i, s in statuses.items() if s in ("extracted", "failed")}
    pending = {i for i, s in statuses.items() if s == "pending"}
    extracted = [i for i, s in statuses.items() if s == "extracted"]
    per_doc = entity_counts(db, run_id)
    entities = sum(per_doc.get(i, 0) for i in extracted)
    emulated = resolved.emulated
    virtual = sum(r.seconds for r in runs) if resolved.capabilities.virtual_time and runs else None
    seconds = virtual or wall
    done_now = sum(1 for i in expected if statuses.get(i) == "extracted")
    counts = Counts.total(r.counts for r in runs)
    batch = batch_api_counts(a for r in runs for a in r.attempts)  # billed at batch prices
    extra = engine.summary()
    per_call = done_now / sum(r.batches for r in runs) if done_now and any(r.batches for r in runs) else 1.0
    charged = sum(a.counts.budget_tokens for r in runs for a in r.attempts if a.outcome == "ok")  # as bench counts
    bound = limit_bound(extra.get("rate_limits"), per_call, charged / done_now if done_now else None, done_now, seconds)
    return {
        "run": run_id, "store": db.url, "lm": resolved.spec, "model_id": resolved.model_id,
        "emulated": emulated, "documents": len(statuses), "read": gate.read, "extracted": len(extracted),
        "failed": sum(1 for s in statuses.values() if s == "failed"), "pending": len(pending),
        "lost": len(expected - final - (pending if stopped else set())),
        "skipped_already_extracted": gate.skipped_done, "changed_since_extracted": gate.changed,
        "duplicates_skipped": gate.duplicates, "bad_records": gate.bad_records, "oversize": gate.oversize,
        "batches": sum(r.batches for r in runs),
        **counts_summary(counts),
        **cost_summary(prices, counts, done_now, batch),  # of this session's calls and documents
        **extra, **(batch_api_fields(batch) if extra["mode"] == "batch-api" else {}),
        "entities": entities,  # of every extracted document of the run (earlier sessions included)
        "entities_per_doc": entities / len(extracted) if extracted else 0.0,
        "zero_entity_docs": sum(1 for i in extracted if not per_doc.get(i)),
        "wall_seconds": wall, "virtual_seconds": virtual,
        "docs_per_second": done_now / seconds if seconds else None,
        "rate_limit_bound_docs_per_min": bound["bound"], "bound_share": bound["share"],
        "stop_reason": stopped,
    }


def entity_counts(db: Store, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in db.entities(run_id):
        counts[e.source_document_id] = counts.get(e.source_document_id, 0) + 1
    return counts
