"""Side-by-side measurements: quality of packed configurations against gold (``evaluate``) and the
speed of one-document-per-call against packing (``bench``), each on the same documents in one run.

Every figure comes from the run itself: seconds are the event loop's (virtual for an emulated LM,
real otherwise), speedups are ratios of configurations measured together. Results are plain files
under ``out``: ``results.json`` (settings, model and weights hash, machine, figures), one
polars-readable CSV and Parquet table per view, and PNG charts.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.demos import demo_ids
from toolkit.documents import Document, Entity
from toolkit.corpora.gold import gold_mapping
from toolkit.evaluation import agreement, by_position, score
from toolkit.extraction import ExtractionSettings, output_per_document
from toolkit.lm import ResolvedLM, resolve_lm
from toolkit.counts import Counts
from toolkit.report import configurations, counts_summary, outcome_summary
from toolkit.service import ExtractionService, ServiceRun, default_policy


@dataclass
class ConfigRun:
    """One configuration run over the documents: outcomes plus the figures that compare runs."""

    name: str
    max_docs: int
    budget: int
    concurrency: str
    run: ServiceRun
    positions: dict[str, int] = field(default_factory=dict)

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


def config_figures(runs: Sequence[ConfigRun]) -> dict[str, Any]:
    """One configuration's figures, over the parts its documents ran in: outcomes, every count,
    seconds and speed, and the spread of one document's output."""
    first = runs[0]
    seconds = sum(r.seconds for r in runs)
    attempts = [a for r in runs for a in r.run.attempts]
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
        "output_sd_per_doc": output_per_document(replies)[1] if len(replies) > 1 else None,
    }


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def run_config(resolved: ResolvedLM, settings: ExtractionSettings, documents: Sequence[Document], name: str,
               max_docs: int, budget: int = 8192, concurrency: str = "1") -> ConfigRun:
    """Pack ``documents`` with ``max_docs`` and ``budget`` and run them (DSPy cache off)."""
    service = ExtractionService(resolved, settings, policy=default_policy(resolved, concurrency))
    run = service.run(documents, budget, progress=False, max_docs=max_docs)
    positions = {doc_id: i for batch in run.pack.batches for i, doc_id in enumerate(batch.document_ids)}
    return ConfigRun(name, max_docs, budget, concurrency, run, positions)


# -------------------------------------------------------------------------------------- evaluate
def evaluate(gold_source: str, lm: str = "local", limit: int | None = 20, max_docs: Sequence[int] = (1, 4, 8),
             budgets: Sequence[int] = (8192,), types: Sequence[str] | None = None,
             prompt_cache: bool = False, layout: str = "auto", demos: str | None = None,
             shots: int = 2) -> dict[str, Any]:
    """Quality and speed of each (max_docs, budget) on the same gold documents; one document per
    call is always run first as the reference for speedup and agreement. ``demos``: a gold corpus
    whose annotated documents are the worked example (see :mod:`toolkit.demos`); none of them may
    be among the evaluated documents."""
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
    grid = [(1, budgets[0])] + [(m, b) for b in budgets for m in max_docs if (m, b) != (1, budgets[0])]
    runs: list[ConfigRun] = []
    for m, b in grid:
        resolved = resolve_lm(lm, prompt_cache=prompt_cache)
        runs.append(run_config(resolved, settings, documents, f"max_docs={m},budget={b}", m, b))
    reference = runs[0]
    rows, positions = [], []
    for r in runs:
        pred = r.predictions
        strict = score(gold, pred, scored, gold_map=gold_map)
        lenient = score(gold, pred, scored, gold_map=gold_map, lenient=True)
        agree = agreement(reference.predictions, pred, scored)
        rows.append({
            **config_figures([r]),
            "strict_precision": strict.precision, "strict_recall": strict.recall, "strict_f1": strict.f1,
            "lenient_precision": lenient.precision, "lenient_recall": lenient.recall, "lenient_f1": lenient.f1,
            "agreement_f1": agree.f1, "speedup": reference.seconds / r.seconds if r.seconds else None,
            "f1_vs_reference": strict.f1 / rows[0]["strict_f1"] if rows and rows[0]["strict_f1"] else None,
        })
        for pos, prf in by_position(gold, pred, r.positions, types=scored, gold_map=gold_map).items():
            positions.append({"config": r.name, "position": pos, **prf.to_dict()})
        for t in scored:
            rows[-1][f"f1_{t}"] = score(gold, pred, (t,), gold_map=gold_map).f1
    probe = resolve_lm(lm)
    return {
        "kind": "eval", "gold": str(gold_source), "lm": lm, "model_id": probe.model_id,
        "layout": probe.capabilities.layout(layout), "capabilities": probe.capabilities.to_dict(),
        "emulated": lm.startswith("emulated:"), "documents": len(documents),
        "types_scored": list(scored), "gold_map": gold_map, "prompt_cache": prompt_cache,
        "settings": settings.to_dict(), "machine": machine(), "configs": rows, "by_position": positions,
        "calls": [] if lm.startswith("emulated:") else [c for r in runs for c in r.calls(prompt_cache)],
    }


# ----------------------------------------------------------------------------------------- bench
BENCH_CONFIGS = ("A", "A_warm", "B", "C")


def bench(lm: str, corpus: str, docs: int, max_docs: int = 10, budget: int = 8192, concurrency: str = "auto:16",
          output_tokens_per_doc: int | None = None, interleave: int | None = None,
          types: Sequence[str] | None = None, layout: str = "auto", demos: str | None = None,
          shots: int = 2) -> dict[str, Any]:
    """(A) one document per call, sequential, cold cache; (A') the same with the prompt cache warm
    (backends that have one); (B) packed, sequential; (C) packed, adaptive concurrency. Real LMs
    run in interleaved chunks of ``interleave`` documents (default ``4 x max_docs``), rotating the
    order per chunk, so drift does not favour one configuration; emulated ones run in virtual time."""
    from toolkit.corpora import iter_records, synthetic_documents

    if corpus.startswith("synthetic"):
        documents = synthetic_documents(docs, seed=0)
    else:  # bad records and later records of an id already taken are not benchmark material
        seen: dict[str, Document] = {}
        for item in iter_records(corpus):
            if isinstance(item, Document) and item.id not in seen:
                seen[item.id] = item
                if len(seen) >= docs:
                    break
        documents = list(seen.values())
    if not documents:
        raise ValueError(f"{corpus}: no documents")
    probe = resolve_lm(lm)
    settings = ExtractionSettings(relationships=False, layout=layout, demos=demos, shots=shots,
                                  **({"entity_types": tuple(types)} if types else {}),
                                  **({"output_tokens_per_doc": output_tokens_per_doc} if output_tokens_per_doc else {}))
    has_cache = probe.capabilities.prompt_cache
    plan = {"A": (1, "1", False), "A_warm": (1, "1", True), "B": (max_docs, "1", False),
            "C": (max_docs, concurrency, False)}
    if not has_cache:
        plan.pop("A_warm")
    chunk = len(documents) if probe.capabilities.virtual_time else (interleave or 4 * max_docs)
    chunks = [documents[i:i + chunk] for i in range(0, len(documents), chunk)]
    parts: dict[str, list[ConfigRun]] = {k: [] for k in plan}
    for n, part in enumerate(chunks):
        order = list(plan)
        order = order[n % len(order):] + order[: n % len(order)]
        for name in order:
            m, conc, warm = plan[name]
            resolved = resolve_lm(lm, prompt_cache=warm)
            if warm:  # warm the prefix cache with a call outside the measurement
                run_config(resolved, settings, part[:1], "warm-up", 1, budget)
            parts[name].append(run_config(resolved, settings, part, name, m, budget, conc))
    configs = [config_figures(runs) for runs in parts.values()]
    by_name = {c["config"]: c for c in configs}
    seconds = {k: v["seconds"] for k, v in by_name.items()}
    out: dict[str, Any] = {
        "kind": "bench", "lm": lm, "model_id": probe.model_id, "emulated": probe.emulated, "corpus": corpus,
        "documents": len(documents), "max_docs": max_docs, "budget": budget, "concurrency": concurrency,
        "interleaved_chunk": chunk, "layout": probe.capabilities.layout(layout), "prompt_cache_available": has_cache,
        "capabilities": probe.capabilities.to_dict(),
        "settings": settings.to_dict(),
        "machine": machine(), "configs": configs,
        "calls": [] if probe.emulated else [c for name, runs in parts.items() for r in runs for c in r.calls(plan[name][2])],
        "speedup_b_vs_a": seconds["A"] / seconds["B"] if seconds["B"] else None,
        "speedup_c_vs_a": seconds["A"] / seconds["C"] if seconds["C"] else None,
        "speedup_b_vs_a_warm": seconds["A_warm"] / seconds["B"] if "A_warm" in seconds and seconds["B"] else None,
        "lost": sum(v["lost"] for v in configs),
    }
    rate = probe.capabilities.rate
    if probe.emulated:
        c = by_name["C"]
        per_call = c["documents"] / c["batches"] if c["batches"] else 1.0
        per_doc = c["budget_tokens_ok"] / c["extracted"] if c["extracted"] else None
        limits = [x for x in (rate.requests_per_minute and rate.requests_per_minute * per_call,
                              rate.tokens_per_minute and per_doc and rate.tokens_per_minute / per_doc) if x]
        bound = min(limits) if limits else None
        reached = c["extracted"] / (c["seconds"] / 60) if c["seconds"] else None
        out.update(rate_limit_bound_docs_per_min=bound, c_docs_per_min=reached,
                   bound_share=reached / bound if bound and reached else None, profile=probe.engine.profile.to_dict())
    return out


# ---------------------------------------------------------------------------------------- output
def write_results(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``results.json`` plus CSV/Parquet tables and a PNG chart under ``out``."""
    import polars as pl

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.json"]
    written[0].write_text(json.dumps(result, indent=2, default=str) + "\n")
    rows = configurations(result)
    tables = {"configs": pl.DataFrame(rows)}
    for table in ("by_position", "calls"):
        if result.get(table):
            tables[table] = pl.DataFrame(result[table])
    for name, frame in tables.items():
        frame = frame.with_columns(pl.lit(result.get("model_id")).alias("model_id"), pl.lit(result["lm"]).alias("lm"))
        frame.write_csv(folder / f"{name}.csv")
        frame.write_parquet(folder / f"{name}.parquet")
        written += [folder / f"{name}.csv", folder / f"{name}.parquet"]
    from toolkit.charts import bench_chart, eval_chart

    chart = eval_chart(tables["configs"]) if result["kind"] == "eval" else bench_chart(tables["configs"])
    chart.save(str(folder / f"{result['kind']}.png"))
    written.append(folder / f"{result['kind']}.png")
    return written
