"""Side-by-side measurements: quality of packed configurations against gold (``evaluate``) and the
speed of one-document-per-call against packing (``bench``), each on the same documents in one run.

Every figure comes from the run itself: seconds are the event loop's (virtual for an emulated LM,
real otherwise), speedups are ratios of configurations measured together. Results are plain files
under ``out``: ``results.json`` (settings, model and weights hash, machine, figures), one
polars-readable CSV and Parquet table per view, and PNG charts.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core import FIELDS, Counts, Document, Entity, Prices, resolve_prices
from toolkit.corpora import gold_mapping
from toolkit.extraction import BatchExtractor, ExtractionSettings, demo_ids, output_per_document
from toolkit.jobs import (
    ExtractionService,
    ServiceRun,
    configurations,
    cost_summary,
    counts_summary,
    default_policy,
    demos_for,
    outcome_summary,
)
from toolkit.jobs.batchapi import BATCH_API_KEYS, batch_api_counts, batch_api_fields, run_batch_api
from toolkit.lm import ResolvedLM, resolve_lm
from toolkit.measure._evalcache import Reference, cache_root, load_reference, reference_key, save_reference
from toolkit.measure._evaluation import agreement, by_position, per_document, score
from toolkit.measure._stats import (
    DEFAULT_RESAMPLES,
    LEVEL,
    document_seconds,
    interval,
    micro_f1,
    ratio,
    resample_weights,
)


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
                         "seconds": a.seconds, **a.counts.to_dict(), "tokens_in": tokens_in, "tokens_out": tokens_out})
        return rows

    def call_times(self) -> list[tuple[list[str], float]]:
        """(documents, seconds) of each call, retries and failed calls included."""
        return [(list(a.document_ids), a.seconds) for a in self.run.attempts]

    @property
    def figures(self) -> dict[str, Any]:
        return config_figures([self])

    def reference(self) -> Reference:
        """This run as the cache keeps a reference (see :mod:`toolkit.measure._evalcache`)."""
        return Reference(self.name, self.max_docs, self.budget, self.concurrency, self.seconds, self.figures,
                         self.predictions, self.positions, self.calls(), [docs for docs, _ in self.call_times()])


def priced(row: dict[str, Any], prices: Prices | None) -> dict[str, Any]:
    """``row`` (a configuration's figures) with what its recorded tokens cost at ``prices``:
    ``cost_usd``, ``cost_per_1k_docs``, ``priced_as`` (None where unpriced); the calls it made
    through a batch API (``batch_api_calls``, ``batch_api_tokens_in``, ...) at batch prices."""
    counts = Counts(**{name: row.get(name) or 0 for name in FIELDS})
    batch = Counts(**{k: row[f"batch_api_{k}"] for k in BATCH_API_KEYS}) if row.get("batch_api_calls") else None
    return {**row, **cost_summary(prices, counts, row["extracted"], batch)}


def config_figures(runs: Sequence[ConfigRun]) -> dict[str, Any]:
    """One configuration's figures, over the parts its documents ran in: outcomes, every count,
    seconds and speed, and the spread of one document's output."""
    first = runs[0]
    seconds = sum(r.seconds for r in runs)
    attempts = [a for r in runs for a in r.run.attempts]
    batch = batch_api_counts(attempts)
    outcomes = outcome_summary([o for r in runs for o in r.run.report.outcomes], sum(r.run.documents for r in runs),
                               any(r.run.stopped for r in runs))
    replies = [(a.counts.documents_ok, float(a.usage[1])) for a in attempts
               if a.outcome == "ok" and a.usage and a.counts.documents_ok]
    return {
        "config": first.name, "max_docs": first.max_docs, "budget": first.budget, "concurrency": first.concurrency,
        "seconds": seconds, **outcomes, "batches": sum(len(r.run.pack.batches) for r in runs),
        **counts_summary(Counts.total(r.run.counts for r in runs)),
        "budget_tokens_ok": sum(a.counts.budget_tokens for a in attempts if a.outcome == "ok"),
        "docs_per_second": outcomes["extracted"] / seconds if seconds else None,
        "docs_per_min_while_calling": _while_calling(outcomes["extracted"], attempts),
        "rate_limits": runs[-1].rate_limits,
        "output_sd_per_doc": output_per_document(replies)[1] if len(replies) > 1 else None,
        **(batch_api_fields(batch) if batch.calls else {}),
    }


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
    messages, config = BatchExtractor(settings, layout, demos_for(settings)).messages([Document("doc-probe", "x")])
    return hashlib.sha256(json.dumps([messages, config], sort_keys=True, default=str).encode()).hexdigest()


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
    positions = {doc_id: i for batch in run.pack.batches for i, doc_id in enumerate(batch.document_ids)}
    return ConfigRun(name, max_docs, budget, concurrency, run, positions, limits)


# -------------------------------------------------------------------------------------- evaluate
NO_INTERVALS = dict.fromkeys(("strict_f1_ci", "lenient_f1_ci", "f1_ratio_ci", "f1_drop_ci", "speedup_ci"))


@dataclass(frozen=True)
class Resampled:
    """One configuration's figures on every bootstrap resample of the documents (the rows of the
    weights of :func:`toolkit.measure._stats.resample_weights`): strict and lenient micro F1, and the
    resampled documents' share of the run's seconds (:func:`toolkit.measure._stats.document_seconds`)."""

    strict: np.ndarray
    lenient: np.ndarray
    seconds: np.ndarray

    @classmethod
    def of(cls, run: ConfigRun | Reference, gold: dict[str, list[Entity]], weights: np.ndarray,
           **scoring: Any) -> Resampled:
        f1 = [micro_f1([(d.tp, d.fp, d.fn) for d in per_document(gold, run.predictions, lenient=lenient,
                                                                   **scoring).values()], weights)
              for lenient in (False, True)]
        return cls(f1[0], f1[1], weights @ document_seconds(run.call_times(), list(gold), run.seconds))

    def intervals(self, reference: Resampled) -> dict[str, list[float] | None]:
        """95% intervals of this configuration's F1s, and paired ones (the same resampled
        documents for both) of its strict F1 ratio and drop in points to ``reference``, and of
        the speedup (the reference's seconds for the resampled documents over this one's)."""
        return {"strict_f1_ci": interval(self.strict), "lenient_f1_ci": interval(self.lenient),
                "f1_ratio_ci": interval(ratio(self.strict, reference.strict)),
                "f1_drop_ci": interval(100 * (reference.strict - self.strict)),
                "speedup_ci": interval(ratio(reference.seconds, self.seconds))}


def evaluate(gold_source: str, lm: str = "local", limit: int | None = 20, max_docs: Sequence[int] = (1, 4, 8),
             budgets: Sequence[int] = (8192,), types: Sequence[str] | None = None,
             prompt_cache: bool = False, layout: str = "auto", demos: str | None = None,
             shots: int = 2, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             reference_cache: str | Path | bool = True, fresh_reference: bool = False,
             price: str | None = None, api_base: str | None = None, rpm: int | None = None,
             tpm: int | None = None) -> dict[str, Any]:
    """Quality and speed of each (max_docs, budget) on the same gold documents; one document per
    call is always the reference for speedup and agreement. ``demos``: a gold corpus whose
    annotated documents are the worked example (see :mod:`toolkit.extraction._demos`); none of them may be
    among the evaluated documents.

    The reference is read from the cache (:mod:`toolkit.measure._evalcache`; ``reference_cache``: True for
    the default folder, a folder, or False for none) when an earlier eval ran it on the same
    documents, settings, model and machine; else it runs first and is stored
    (``fresh_reference``: run and store it again). ``reference_cached`` says which.

    Intervals (``resamples`` bootstrap resamples of the documents, seeded by ``seed``; 0: none), the
    same resamples for every configuration (see :mod:`toolkit.measure._stats`): ``strict_f1_ci`` and
    ``lenient_f1_ci`` (micro F1 of each resample); paired with the reference: ``f1_ratio_ci``
    (strict F1 over the reference's; resamples where the reference scores 0 left out) and
    ``f1_drop_ci`` (the reference's strict F1 minus this one's, in points), and ``speedup_ci``:
    each call's seconds split equally among the documents it carried (retries included), scaled to
    the run's seconds, and the resampled documents' seconds under the reference over theirs here.
    It covers which documents were drawn; not the machine's drift between runs, nor that a
    resampled corpus would be packed into other batches. Each configuration's tokens are priced
    (``price``: a model of LiteLLM's price map or a price file; default: the LM's own).
    ``api_base``: an OpenAI-compatible server; ``rpm``/``tpm``: the account's limits per minute."""
    from toolkit.corpora import iter_gold

    pairs = list(iter_gold(gold_source))[: limit or None]
    if not pairs:
        raise ValueError(f"{gold_source}: no annotated documents")
    documents = [d for d, _ in pairs]
    gold = {d.id: g for d, g in pairs}
    gold_map, scored = gold_mapping(e.type for g in gold.values() for e in g)
    asked = tuple(types) if types else scored
    settings = ExtractionSettings(entity_types=asked, relationships=False, layout=layout, demos=demos, shots=shots)
    if demos and (shown := demo_ids(demos, shots, asked) & set(gold)):
        raise ValueError(f"{len(shown)} demo documents of {demos} are evaluated documents too "
                         f"({', '.join(sorted(shown))}): draw demos from another split (e.g. ncbi-disease-train)")
    probe = resolve_lm(lm, api_base=api_base)
    prices = resolve_prices(probe.priced_as, price)
    grid = [(1, budgets[0])] + [(m, b) for b in budgets for m in max_docs if (m, b) != (1, budgets[0])]
    path = None
    if reference_cache is not False:
        used = probe.capabilities.layout(layout)
        key = reference_key(documents, model_id=probe.model_id, capabilities=probe.capabilities.to_dict(),
                            settings=settings.to_dict(), prompt=prompt_digest(settings, used), layout=used,
                            budget=budgets[0], prompt_cache=prompt_cache, machine=machine())
        path = (cache_root() if reference_cache is True else Path(reference_cache)) / f"{key}.json"
    cached = None if path is None or fresh_reference else load_reference(path)
    runs: list[ConfigRun | Reference] = [cached] if cached else []
    for m, b in grid[len(runs):]:
        resolved = resolve_lm(lm, prompt_cache=prompt_cache, api_base=api_base)
        runs.append(run_config(resolved, settings, documents, f"max_docs={m},budget={b}", m, b, rpm=rpm, tpm=tpm,
                               api_base=api_base))
    reference = runs[0]
    stored = path is not None and isinstance(reference, ConfigRun) and not reference.run.stopped \
        and reference.figures["lost"] == 0
    if stored:
        save_reference(path, reference.reference())
    scoring = {"types": scored, "gold_map": gold_map}
    weights = resample_weights(len(gold), resamples, seed) if resamples else None
    resampled = [Resampled.of(r, gold, weights, **scoring) for r in runs] if weights is not None else []
    rows, positions = [], []
    for i, r in enumerate(runs):
        pred = r.predictions
        strict = score(gold, pred, lenient=False, **scoring)
        lenient = score(gold, pred, lenient=True, **scoring)
        rows.append({
            **priced(r.figures, prices),
            "strict_precision": strict.precision, "strict_recall": strict.recall, "strict_f1": strict.f1,
            "lenient_precision": lenient.precision, "lenient_recall": lenient.recall, "lenient_f1": lenient.f1,
            "agreement_f1": agreement(reference.predictions, pred, scored).f1,
            "speedup": reference.seconds / r.seconds if r.seconds else None,
            "f1_vs_reference": strict.f1 / rows[0]["strict_f1"] if rows and rows[0]["strict_f1"] else None,
            **(resampled[i].intervals(resampled[0]) if resampled else NO_INTERVALS),
        })
        for pos, prf in by_position(gold, pred, r.positions, **scoring).items():
            positions.append({"config": r.name, "position": pos, **prf.to_dict()})
        for t in scored:
            rows[-1][f"f1_{t}"] = score(gold, pred, (t,), gold_map=gold_map).f1
    return {
        "kind": "eval", "gold": str(gold_source), "lm": lm, "model_id": probe.model_id,
        "layout": probe.capabilities.layout(layout), "capabilities": probe.capabilities.to_dict(),
        "emulated": lm.startswith("emulated:"), "documents": len(documents),
        "types_scored": list(scored), "gold_map": gold_map, "prompt_cache": prompt_cache,
        "settings": settings.to_dict(), "machine": machine(), "configs": rows, "by_position": positions,
        "reference_cached": cached is not None, "reference_cache": str(path) if cached or stored else None,
        "reference_created": cached.created if cached else None,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "over": "documents"},
        "calls": [] if lm.startswith("emulated:") else [c for r in runs for c in r.calls(prompt_cache)],
    }


EVAL_COLUMNS = ("config", "calls", "seconds", "speedup", "speedup_ci", "strict_f1", "strict_f1_ci", "lenient_f1",
                "lenient_f1_ci", "f1_vs_reference", "f1_ratio_ci", "agreement_f1", "leaks", "entities_per_doc",
                "cost_usd", "cost_per_1k_docs")

def eval_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """An eval result's configurations as the CLI prints them: point figures beside their intervals."""
    return [{k: r.get(k) for k in EVAL_COLUMNS} for r in configurations(result)]


def eval_note(result: dict[str, Any]) -> str:
    """Where the reference came from and what the intervals are, in one line."""
    boot = result["bootstrap"]
    where = (f"read from {result['reference_cache']}" if result["reference_cached"]
             else f"run, cached in {result['reference_cache']}" if result["reference_cache"] else "run")
    return (f"one document per call: {where}; intervals: {boot['level']:.0%} bootstrap over documents, "
            f"{boot['resamples']} resamples (0: none), paired with one document per call")


# ---------------------------------------------------------------------------------------- output
def write_results(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``results.json`` plus CSV/Parquet tables and a PNG chart under ``out``."""
    import polars as pl

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.json"]
    written[0].write_text(json.dumps(result, indent=2, default=str) + "\n")
    rows = [_flat(r) for r in configurations(result)]
    tables = {"configs": pl.DataFrame(rows)}
    for table in ("by_position", "calls"):
        if result.get(table):
            tables[table] = pl.DataFrame(result[table])
    for name, frame in tables.items():
        frame = frame.with_columns(pl.lit(result.get("model_id")).alias("model_id"), pl.lit(result["lm"]).alias("lm"))
        frame.write_csv(folder / f"{name}.csv")
        frame.write_parquet(folder / f"{name}.parquet")
        written += [folder / f"{name}.csv", folder / f"{name}.parquet"]
    from toolkit.measure._charts import bench_chart, eval_chart

    chart = eval_chart(tables["configs"]) if result["kind"] == "eval" else bench_chart(tables["configs"])
    chart.save(str(folder / f"{result['kind']}.png"))
    written.append(folder / f"{result['kind']}.png")
    return written


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A configuration as a table row: an interval ``x_ci`` as two columns ``x_ci_low``, ``x_ci_high``;
    the rate limits it paced by as ``rate_limits_rpm``, ``_tpm``, ``_window``, ``_source``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_ci"):
            out[f"{key}_low"], out[f"{key}_high"] = value or (None, None)
        elif key == "rate_limits":
            out.update({f"{key}_{k}": (value or {}).get(k) for k in ("rpm", "tpm", "window", "source")})
        else:
            out[key] = value
    return out
