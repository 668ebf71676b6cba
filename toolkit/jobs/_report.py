"""The figures of one executed set of batches, as one JSON-ready dict (main job and experiments)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.core import Counts

if TYPE_CHECKING:
    from toolkit.core import Prices
    from toolkit.execution import DocumentOutcome
    from toolkit.jobs._service import ServiceRun


DECIDED = ("extracted", "failed")  # a document with one of these statuses is accounted for for good


def lost_documents(statuses: Iterable[str | None], stopped: bool) -> int:
    """``lost``, the headline guarantee (it must be 0): of the documents a run was given (the status
    each ended with; None: it has none), those neither decided (extracted or failed) nor, in a run
    that stopped, pending (resumable). One formula for the main job, the bench and the evaluation."""
    return sum(1 for status in statuses if status not in DECIDED and not (stopped and status == "pending"))


def outcome_summary(outcomes: Sequence[DocumentOutcome], documents: int, stopped: bool) -> dict[str, Any]:
    """What became of the ``documents`` given (``outcomes``: theirs, one each at most): extracted,
    failed, pending, lost, and the entities kept."""
    extracted = [o for o in outcomes if o.status == "extracted"]
    pending = sum(1 for o in outcomes if o.status == "pending")
    entities = sum(len(o.entities) for o in extracted)
    statuses = [o.status for o in outcomes] + [None] * (documents - len(outcomes))
    return {
        "documents": documents,
        "extracted": len(extracted),
        "failed": sum(1 for o in outcomes if o.status == "failed"),
        "pending": pending,
        "lost": lost_documents(statuses, stopped),
        "entities_per_doc": entities / len(extracted) if extracted else 0.0,
        "zero_entity_docs": sum(1 for o in extracted if not o.entities),
    }


def counts_summary(counts: Counts) -> dict[str, Any]:
    """Every count, flat, and the rates derived from them."""
    return {**counts.to_dict(), "grounded_rate": counts.grounded_rate}


def cost_summary(prices: Prices | None, counts: Counts, extracted: int,
                 batch_part: Counts | None = None) -> dict[str, Any]:
    """What ``counts``' tokens cost at ``prices`` (None: unpriced, e.g. the local model: every
    figure None, never 0), per run and per 1,000 extracted documents; ``batch_part``: of ``counts``,
    the calls made through a provider's batch API, billed at its batch prices (the rest at the usual
    ones). Prices without batch prices leave a batch part unpriced: the cost is None, ``cost_note`` says why."""
    if prices is None:
        return {"cost_usd": None, "cost_per_1k_docs": None, "priced_as": None, "cost_note": None}
    batch = batch_part or Counts()
    if batch.calls and not prices.batch_priced:
        note = f"{batch.calls} calls went through a batch API and {prices.model} has no batch prices ({prices.source})"
        return {"cost_usd": None, "cost_per_1k_docs": None, "priced_as": prices.model, "cost_note": note}
    sync = counts - batch
    usd = prices.cost(sync.tokens_in, sync.tokens_out, sync.cached_tokens)
    if batch.calls:
        usd += prices.cost(batch.tokens_in, batch.tokens_out, batch.cached_tokens, batch=True)
    return {"cost_usd": usd, "cost_per_1k_docs": 1000 * usd / extracted if extracted else None,
            "priced_as": prices.model, "cost_note": None}


def extraction_summary(run: ServiceRun, wall_seconds: float, emulated: bool = False) -> dict[str, Any]:
    """Outcomes, counts, quality signals, tokens and speed of ``run``; ``lost`` must be 0."""
    report = run.report
    seconds = report.seconds if emulated else wall_seconds
    outcomes = outcome_summary(report.outcomes, run.documents, run.stopped is not None)
    return {
        **outcomes,
        "batches": len(run.batches),
        **counts_summary(run.counts),
        "wall_seconds": wall_seconds,
        **({"virtual_seconds": report.seconds} if emulated else {}),
        "docs_per_second": outcomes["extracted"] / seconds if seconds > 0 else None,
        "stop_reason": run.stopped,
    }


def limit_bound(limits: dict[str, Any] | None, per_call: float, per_doc: float | None, done: int,
                seconds: float | None) -> dict[str, float | None]:
    """``bound``: the documents per minute ``limits`` (``rpm``, ``tpm`` per ``window`` seconds) allow
    at ``per_call`` documents a call and ``per_doc`` tokens charged a document (the budget tokens of
    the calls that were answered, over the documents extracted: what the provider charged, since a
    429 is not charged); ``reached``: ``done`` documents in ``seconds``; ``share``: reached / bound
    (None where unknown). One formula for the main job and the bench."""
    limits = limits or {}
    per_minute = 60.0 / (limits.get("window") or 60.0)
    rpm, tpm = limits.get("rpm"), limits.get("tpm")
    caps = [x for x in (rpm and rpm * per_minute * per_call, tpm and per_doc and tpm * per_minute / per_doc) if x]
    bound = min(caps) if caps else None
    reached = done / (seconds / 60) if seconds else None
    return {"bound": bound, "reached": reached, "share": reached / bound if bound and reached else None}
