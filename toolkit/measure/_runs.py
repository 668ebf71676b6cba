"""One configuration run over the documents, as ``evaluate`` and ``bench`` run each of theirs, and its
figures (:class:`~toolkit.measure._results.ConfigFigures`).

Every figure comes from the run itself: seconds are the event loop's (virtual for an emulated LM,
real otherwise), speedups are ratios of configurations measured together.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.core import Counts, Document, Entity, Prices
from toolkit.extraction import ExtractionSettings, output_per_document
from toolkit.jobs import (
    ExtractionService,
    ServiceRun,
    cost_summary,
    counts_summary,
    default_policy,
    extractor_for,
    outcome_summary,
)
from toolkit.jobs.batchapi import batch_api_counts, batch_api_fields, run_batch_api
from toolkit.lm import ResolvedLM
from toolkit.measure._evalcache import Reference
from toolkit.measure._results import ConfigFigures


@dataclass
class ConfigRun:
    """One configuration run over the documents: outcomes plus the figures that compare runs."""

    name: str
    max_docs: int
    budget: int
    concurrency: str
    run: ServiceRun
    positions: dict[str, int] = field(default_factory=dict)
    rate_limits: dict[str, Any] | None = None  # the limits it paced by (said, the backend's or learned)

    @property
    def seconds(self) -> float:
        return self.run.report.seconds

    @property
    def predictions(self) -> dict[str, list[Entity]]:
        return {o.id: o.entities for o in self.run.report.outcomes if o.status == "extracted"}

    def calls(self, prompt_cache: bool = False) -> list[dict[str, Any]]:
        """One row per LM call (``plan --calibrated RESULTS`` fits a latency profile on them);
        tokens are None where the model reported no usage."""
        rows = []
        for a in self.run.attempts:
            tokens_in, tokens_out = a.usage or (None, None)
            rows.append({"config": self.name, "prompt_cache": prompt_cache, "batch_id": a.batch_id,
                         "attempt": a.attempt, "outcome": a.outcome, "documents": len(a.document_ids),
                         "seconds": a.seconds, **a.counts.to_dict(), "tokens_in": tokens_in,
                         "tokens_out": tokens_out})
        return rows

    def call_times(self) -> list[tuple[list[str], float]]:
        """(documents, seconds) of each call, retries and failed calls included."""
        return [(list(a.document_ids), a.seconds) for a in self.run.attempts]

    @property
    def figures(self) -> ConfigFigures:
        return config_figures([self])

    def reference(self) -> Reference:
        """This run as the cache keeps a reference (see :mod:`toolkit.measure._evalcache`)."""
        return Reference(self.name, self.max_docs, self.budget, self.concurrency, self.seconds,
                         self.figures.to_json(), self.predictions, self.positions, self.calls(),
                         [docs for docs, _ in self.call_times()])


def figures_of(run: ConfigRun | Reference) -> ConfigFigures:
    """A run's figures, or a cached reference's."""
    return run.figures if isinstance(run, ConfigRun) else ConfigFigures.from_json(run.figures)


def priced(row: ConfigFigures, prices: Prices | None) -> ConfigFigures:
    """``row`` (a configuration's figures) with what its recorded tokens cost at ``prices``:
    ``cost_usd``, ``cost_per_1k_docs``, ``priced_as`` (None where unpriced); the calls it made
    through a batch API (``batch_api_calls``, ``batch_api_tokens_in``, ...) at batch prices."""
    batch = row.batch_api if row.batch_api is not None and row.batch_api.calls else None
    return row.with_figures(**cost_summary(prices, row.counts, row.extracted, batch))


def config_figures(runs: Sequence[ConfigRun]) -> ConfigFigures:
    """One configuration's figures, over the parts its documents ran in: outcomes, every count,
    seconds and speed, and the spread of one document's output."""
    first = runs[0]
    seconds = sum(r.seconds for r in runs)
    attempts = [a for r in runs for a in r.run.attempts]
    batch = batch_api_counts(attempts)
    outcomes = outcome_summary([o for r in runs for o in r.run.report.outcomes],
                               sum(r.run.documents for r in runs), any(r.run.stopped for r in runs))
    replies = [(a.counts.documents_ok, float(a.usage[1])) for a in attempts
               if a.outcome == "ok" and a.usage and a.counts.documents_ok]
    return ConfigFigures.from_json({
        "config": first.name, "max_docs": first.max_docs, "budget": first.budget, "concurrency": first.concurrency,
        "seconds": seconds, **outcomes, "batches": sum(len(r.run.batches) for r in runs),
        **counts_summary(Counts.total(r.run.counts for r in runs)),
        "budget_tokens_ok": sum(a.counts.budget_tokens for a in attempts if a.outcome == "ok"),
        "docs_per_second": outcomes["extracted"] / seconds if seconds else None,
        "docs_per_min_while_calling": _while_calling(outcomes["extracted"], attempts),
        "rate_limits": runs[-1].rate_limits,
        "output_sd_per_doc": output_per_document(replies)[1] if len(replies) > 1 else None,
        **(batch_api_fields(batch) if batch.calls else {}),
    })


def _while_calling(done: int, attempts: Sequence[Any]) -> float | None:
    """Documents per minute from the first call's admission to the last call's end (the rate while
    calls ran, without the time before the first and after the last)."""
    spans = [(a.started, a.started + a.seconds) for a in attempts]  # the run's clock (virtual where it is)
    if not spans or not done:
        return None
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return done / span * 60 if span > 0 else None


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def prompt_digest(settings: ExtractionSettings, layout: str) -> str:
    """A digest of the request one document is sent (instructions, worked example, schema, LM
    settings): an edit of the prompt in the code misses the reference cache."""
    extractor = extractor_for(settings, layout)
    messages, config = extractor.messages([Document("doc-probe", "x")])
    later = [predictor.demos for predictor in extractor.more_passes]  # each further pass's worked examples
    return hashlib.sha256(json.dumps([messages, config, later], sort_keys=True, default=str).encode()).hexdigest()


def run_config(resolved: ResolvedLM, settings: ExtractionSettings, documents: Sequence[Document], name: str,
               max_docs: int, budget: int = 8192, concurrency: str = "1", mode: str = "sync",
               rpm: int | None = None, tpm: int | None = None, api_base: str | None = None) -> ConfigRun:
    """Pack ``documents`` with ``max_docs`` and ``budget`` and run them (DSPy cache off), call by
    call or (``mode="batch-api"``) through the backend's batch API (at ``api_base``, the server
    ``resolved`` was resolved for); ``rpm``/``tpm``: the account's."""
    service = ExtractionService(resolved, settings, policy=default_policy(resolved, concurrency, rpm, tpm),
                                api_base=api_base)
    try:
        if mode == "batch-api":
            run = run_batch_api(service, documents, budget, max_docs=max_docs)
        else:
            run = service.run(documents, budget, progress=False, max_docs=max_docs)
        limits = service.rate_limits()
    finally:
        service.close()
    positions = {doc_id: i for batch in run.batches for i, doc_id in enumerate(batch.document_ids)}
    return ConfigRun(name, max_docs, budget, concurrency, run, positions, limits)
