"""A main-job run's summary (:class:`RunSummary`): its documents from the store (the truth), its
counts summed over its chunks, its cost, speed and the share of the rate limits' bound it reached."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.core import FIELDS, MODES, Counts, Mode
from toolkit.jobs._report import cost_summary, counts_summary, limit_bound, lost_documents
from toolkit.jobs._runners import RateLimits
from toolkit.jobs.batchapi import BATCH_API_KEYS, batch_api_counts, batch_api_fields

if TYPE_CHECKING:
    from toolkit.jobs._context import RunContext
    from toolkit.jobs._runners import ChunkResult
    from toolkit.store import Store

_SYNC = {"when": "sync"}  # in the JSON only in sync mode
_BATCH_API = {"when": "batch-api"}  # in the JSON only in batch-api mode
_RAY = {"when": "ray"}  # in the JSON only when given (a run on Ray)


@dataclass(frozen=True)
class RunSummary:
    """What a run did. Its fields are the keys of :meth:`to_json` (what ``extract --json`` prints
    and the store keeps), except ``counts`` (every count, flat, and ``grounded_rate``) and
    ``batch_api`` (the calls made through a batch API, as ``batch_api_<count>``). Documents are
    the store's (the run's, earlier sessions included); counts, cost and speed this session's."""

    run: str
    store: str
    lm: str
    model_id: str
    emulated: bool
    documents: int
    read: int  # records this session read
    extracted: int
    failed: int
    pending: int
    lost: int  # must be 0 (see toolkit.jobs.lost_documents)
    skipped_already_extracted: int
    changed_since_extracted: int
    duplicates_skipped: int
    bad_records: int
    oversize: int
    batches: int
    counts: Counts
    cost_usd: float | None
    cost_per_1k_docs: float | None
    priced_as: str | None
    cost_note: str | None
    mode: Mode
    rate_limits: RateLimits | None = field(default=None, metadata=_SYNC)  # the limits the run paced by
    workers_replaced: int | None = field(default=None, metadata=_RAY)
    batch_api_jobs: int | None = field(default=None, metadata=_BATCH_API)
    batch_api_failed_lines: int | None = field(default=None, metadata=_BATCH_API)
    batch_api_lost_batches: int | None = field(default=None, metadata=_BATCH_API)
    batch_api: Counts = field(default_factory=Counts, metadata=_BATCH_API)
    entities: int = 0  # of every extracted document of the run (earlier sessions included)
    entities_per_doc: float = 0.0
    zero_entity_docs: int = 0
    wall_seconds: float = 0.0
    virtual_seconds: float | None = None
    docs_per_second: float | None = None
    rate_limit_bound_docs_per_min: float | None = None
    bound_share: float | None = None
    stop_reason: str | None = None
    input_error: str | None = None  # the input was damaged: the run ended after the documents before it

    def to_json(self) -> dict[str, Any]:
        """The summary as one JSON-ready dict, keys in field order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value, when = getattr(self, f.name), f.metadata.get("when")
            if (when == "ray" and value is None) or (when in MODES and when != self.mode):
                continue
            if f.name == "counts":
                out.update(counts_summary(value))
            elif f.name == "batch_api":
                out.update(batch_api_fields(value))
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        """A summary read back (from the store, or ``extract --json``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"counts", "batch_api"}
        batch_api = Counts(**{k: data.get(f"batch_api_{k}", 0) for k in BATCH_API_KEYS})
        return cls(counts=Counts(**{k: data.get(k, 0) for k in FIELDS}), batch_api=batch_api,
                   **{k: v for k, v in data.items() if k in names})


def run_summary(job: RunContext, expected: set[str], runs: list[ChunkResult], wall: float, stopped: str | None,
                damaged: str | None) -> RunSummary:
    """The run's figures: documents from the store (the truth), counts summed over its chunks
    (``expected``: the documents this session read; ``job.gate``: its intake's tallies)."""
    db, run_id, gate, resolved = job.db, job.run_id, job.gate, job.service.resolved
    statuses = db.statuses(run_id)
    extracted = [i for i, s in statuses.items() if s == "extracted"]
    per_doc = entity_counts(db, run_id)
    entities = sum(per_doc.get(i, 0) for i in extracted)
    virtual = sum(r.seconds for r in runs) if resolved.capabilities.virtual_time and runs else None
    seconds = virtual or wall
    done_now = sum(1 for i in expected if statuses.get(i) == "extracted")
    counts = Counts.total(r.counts for r in runs)
    batch = batch_api_counts(a for r in runs for a in r.attempts)  # billed at batch prices
    figures = job.runner.summary()
    batches = sum(r.batches for r in runs)
    per_call = done_now / batches if done_now and batches else 1.0
    charged = sum(a.counts.budget_tokens for r in runs for a in r.attempts if a.outcome == "ok")  # as bench counts
    bound = limit_bound(figures.get("rate_limits"), per_call, charged / done_now if done_now else None, done_now,
                        seconds)
    return RunSummary(
        run=run_id, store=db.url, lm=resolved.spec, model_id=resolved.model_id, emulated=resolved.emulated,
        documents=len(statuses), read=gate.read, extracted=len(extracted),
        failed=sum(1 for s in statuses.values() if s == "failed"),
        pending=sum(1 for s in statuses.values() if s == "pending"),
        lost=lost_documents((statuses.get(i) for i in expected), bool(stopped)),
        skipped_already_extracted=gate.skipped_done, changed_since_extracted=gate.changed,
        duplicates_skipped=gate.duplicates, bad_records=gate.bad_records, oversize=gate.oversize,
        batches=batches, counts=counts,
        **cost_summary(job.prices, counts, done_now, batch),  # of this session's calls and documents
        **figures, batch_api=batch,
        entities=entities, entities_per_doc=entities / len(extracted) if extracted else 0.0,
        zero_entity_docs=sum(1 for i in extracted if not per_doc.get(i)),
        wall_seconds=wall, virtual_seconds=virtual, docs_per_second=done_now / seconds if seconds else None,
        rate_limit_bound_docs_per_min=bound["bound"], bound_share=bound["share"],
        stop_reason=stopped, input_error=damaged,
    )


def entity_counts(db: Store, run_id: str) -> Counter[str]:
    """Entities stored per document of run ``run_id``."""
    return Counter(e.source_document_id for e in db.entities(run_id))
