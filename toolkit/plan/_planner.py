"""Predict throughput for a grid of settings from a latency profile and the corpus's token counts,
and recommend the fastest setting whose quality stays within an allowed F1 drop.

The model of one call is the profile's: ``overhead + prompt/prompt_rate + output/output_rate``,
with ``prompt = instructions + n x (text + per-document tokens)`` and ``output = n x output per
document`` (measured per setting by an ``eval`` run when given, its mean for settings it did not
run, else an assumption that the result states). The ``parallel`` layout (one-document prompts
decoded together) evaluates the same tokens: its shared prefix once per batch, each document once.
Throughput is bounded by the calls in flight (the profile's parallel slots) and by the requests
and tokens per minute, where a call is charged its prompt and the output allowance the run would
learn (``n*mu + 3*sigma*sqrt(n)``, sigma from the eval's one-document replies, else assumed equal to
the mean). Quality comes from an ``eval`` run's F1 by documents per call.

**The allowed F1 drop** (``max_f1_drop``, strict-F1 points against one document per call) is
judged against the eval's paired bootstrap interval of the drop (``f1_drop_ci``): a setting is
allowed only when the interval's upper end is within it, that is when the drop is at most
``max_f1_drop`` points with 97.5% confidence (one-sided) on these documents, not merely on
average. Too few documents to show that leave only one document per call allowed: the answer is
a bigger eval, not a looser rule. An eval result without intervals (written before them, or
run with ``--resamples 0``) is judged on its point figures as before: ``100 x (F1 at one document
per call - F1) <= max_f1_drop``.

A latency profile fitted on cold calls cannot say what a backend's prompt cache saves, so a
``bench`` run can be given too: its measured configurations (A, A' with the cache warm, B, C)
join the candidates with their measured speedup over A, and the recommendation is the fastest
allowed candidate, predicted or measured.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.core import resolve_prices
from toolkit.extraction import ExtractionSettings, output_allowance
from toolkit.jobs import configurations, measure_reserves
from toolkit.lm import CacheRules, Capabilities, Profile, load_profile
from toolkit.packing import get_counter
from toolkit.plan._money import describe, modes_for, parse_hours, picks, price_rows

DEFAULT_OUTPUT_PER_DOC = 60.0  # tokens, when no eval run says better
GRID_COLUMNS = ("mode", "budget", "max_docs", "concurrency", "call_seconds", "docs_per_min", "bound_by",
                "predicted_speedup", "hours", "cost_per_1k_docs", "f1", "f1_drop_ci", "allowed")
MEASURED_COLUMNS = ("config", "max_docs", "concurrency", "prompt_cache", "docs_per_min", "speedup", "f1", "f1_drop_ci",
                    "allowed")


def within_drop(row: dict[str, Any] | None, reference_f1: float | None, max_f1_drop: float) -> bool:
    """Whether an eval configuration ``row`` keeps quality within ``max_f1_drop`` points (see the
    module docstring): the upper end of its paired interval of the drop when it has one, else its
    point F1 against ``reference_f1``. Without quality figures (``reference_f1`` None) anything
    goes; a setting the eval did not run is not allowed."""
    if reference_f1 is None:
        return True
    if row is None:
        return False
    if row.get("f1_drop_ci"):
        return row["f1_drop_ci"][1] <= max_f1_drop
    return 100 * (reference_f1 - row["strict_f1"]) <= max_f1_drop


def judgement(rows: Sequence[dict[str, Any]], max_f1_drop: float) -> str:
    """How :func:`within_drop` judges ``rows`` (an eval's configurations), in words."""
    if not rows:
        return "any setting (no eval run: quality not constrained)"
    if all(r.get("f1_drop_ci") for r in rows):
        return f"the upper end of the paired 95% interval of the strict-F1 drop is at most {max_f1_drop:g} points"
    return f"the point strict-F1 drop is at most {max_f1_drop:g} points (the eval run has no intervals)"


def plan_summary(result: dict[str, Any]) -> str:
    """What the CLI prints under a plan's tables: the recommendation, where quality and output
    sizes came from and how quality was judged, and predicted against measured speedups."""
    best = result["recommendation"]
    lines = [f"recommended ({best['source']}): {json.dumps({k: best[k] for k in ('config', 'speedup', 'f1')})}",
             f"quality: {result['quality_source']}; allowed: {result['quality_judgement']}",
             f"output tokens per document: {result['output_per_doc_source']}"]
    money = result.get("money")
    if money:
        priced = money["prices"]["model"] if money["prices"] else "unpriced"
        lines += [f"{money['documents']:,} documents at {priced}'s prices, modes {', '.join(money['modes'])}:",
                  f"  cheapest within the deadline ({money['deadline_hours'] or 'none'} h): "
                  f"{describe(money['cheapest_within_deadline'])}",
                  f"  fastest within the budget (${money['budget_usd'] or 'none'}): {describe(money['fastest_within_budget'])}"]
    lines += [f"max_docs={row['max_docs']}: predicted speedup {row['predicted_speedup']:.2f}, measured "
              f"{row['measured_speedup']:.2f} ({row['error']:+.0%})" for row in result.get("predicted_vs_measured", [])]
    return "\n".join(lines)


def write_plan(result: dict[str, Any], out: str | Path) -> Path:
    """``plan.json`` under ``out``."""
    path = Path(out) / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def resolve_profile(name: str) -> Profile:
    """A shipped profile, a profile JSON, or one fitted on the calls an eval/bench ``results.json`` recorded."""
    path = Path(name)
    if path.suffix == ".json" and path.exists() and json.loads(path.read_text()).get("kind") in ("eval", "bench"):
        from toolkit.measure import profile_from_results

        return profile_from_results(path)
    return load_profile(name)


def profile_capabilities(profile: Profile) -> Capabilities:
    """What the backend a profile describes can do: the backend's own when the profile names one
    (a profile calibrated on the local model counts in its tokens), else a provider's, in
    ``profile.tokenizer`` (default gpt-4o-mini) tokens."""
    from toolkit.lm import names_backend, resolve_lm

    if profile.tokenizer and names_backend(profile.tokenizer):
        return resolve_lm(profile.tokenizer).capabilities
    return Capabilities(tokenizer=profile.tokenizer or "gpt-4o-mini")


def count_documents(corpus: str) -> int:
    from toolkit.corpora import load_corpus

    return sum(1 for _ in load_corpus(corpus))


def corpus_tokens(corpus: str, model: str, sample: int = 2000) -> dict[str, float]:
    from toolkit.corpora import load_corpus

    counter = get_counter(model)
    counts = []
    for i, doc in enumerate(load_corpus(corpus)):
        if i >= sample:
            break
        counts.append(counter.count(doc.text))
    if not counts:
        raise ValueError(f"{corpus}: no documents")
    return {"documents_sampled": len(counts), "mean": statistics.fmean(counts), "median": statistics.median(counts),
            "max": max(counts)}


def predict(profile: Profile, text_tokens: float, prompt_tokens: int, per_doc_tokens: int, output_per_doc: float,
            max_docs: int, concurrency: int, settings: ExtractionSettings, budget: int,
            output_sd: float | None = None, resends_per_batch: float = 0.0, mode: str = "sync",
            cache: CacheRules | None = None) -> dict[str, Any]:
    """Predicted seconds per call and documents per minute for one setting. Under a
    tokens-per-minute limit a call is charged its prompt and ``max_tokens``: the run's learned
    allowance (:func:`output_allowance`) when the output spread ``output_sd`` is known, else the ceiling.
    ``resends_per_batch`` counts documents re-sent after cut-off or partial replies, one call each.
    ``mode`` (:mod:`toolkit.plan._money`): ``cache`` reads the shared prefix from ``cache``; in
    ``batch-api`` mode the provider's batch window, not the call rate, says when it is done."""
    n = max_docs
    while n > 1 and prompt_tokens + n * (text_tokens + per_doc_tokens + settings.output_tokens_per_doc) > budget:
        n -= 1  # the budget binds before max_docs
    shared = prompt_tokens - settings.max_tokens(0)  # what every call repeats before its documents
    prompt = shared + n * (text_tokens + per_doc_tokens)
    output = n * output_per_doc
    single = shared + text_tokens + per_doc_tokens
    cached = cache.cacheable(shared) if mode == "cache" and cache is not None else 0
    call = (profile.call_seconds(prompt - cached, output) + resends_per_batch * profile.call_seconds(single - cached, 0))
    slots = min(concurrency, profile.parallel_slots or concurrency)
    limits = {"concurrency": slots * n * 60 / call}
    if profile.requests_per_minute:
        limits["requests_per_minute"] = profile.requests_per_minute * n
    if profile.tokens_per_minute:
        allowance = (settings.max_tokens(n) if output_sd is None
                     else output_allowance(n, output_per_doc, output_sd, settings))
        free = cached if cache is not None and not cache.counts_towards_tpm else 0
        limits["tokens_per_minute"] = profile.tokens_per_minute * n / (prompt - free + allowance)
    bound = min(limits, key=limits.get)
    batch = mode == "batch-api"
    return {"mode": mode, "max_docs": max_docs, "docs_per_call": n, "budget": budget, "concurrency": concurrency,
            "call_seconds": call, "resends_per_batch": resends_per_batch,
            "docs_per_min": None if batch else limits[bound], "bound_by": "batch window" if batch else bound,
            "prompt_tokens": prompt, "output_tokens": output, "cached_tokens": cached}


def _slots(concurrency: int | str) -> int:
    """Calls in flight at most: ``4`` or ``"auto:16"``."""
    return int(str(concurrency).rpartition(":")[2] or 16)


def measured_candidates(bench: dict[str, Any], quality: dict[tuple[int, int], dict[str, Any]],
                        reference: dict[str, Any] | None, max_f1_drop: float) -> list[dict[str, Any]]:
    """A bench run's configurations as candidates: measured speedup over its A, and the eval's
    quality (``quality``: its configurations by documents per call and budget) for their documents
    per call (A' has A's, the eval's ``reference``: the same prompt, one document per call)."""
    configs = {c["config"]: c for c in configurations(bench)}
    base = configs["A"]["docs_per_second"]
    reference_f1 = reference["strict_f1"] if reference else None
    rows = []
    for name, c in configs.items():
        row = reference if c["max_docs"] == 1 else quality.get((c["max_docs"], c["budget"]))
        rows.append({
            "config": name, "max_docs": c["max_docs"], "budget": c["budget"], "concurrency": c["concurrency"],
            "prompt_cache": name == "A_warm", "source": "measured (bench)", "f1": row["strict_f1"] if row else None,
            "f1_drop_ci": row.get("f1_drop_ci") if row else None,
            "allowed": within_drop(row, reference_f1, max_f1_drop),
            "docs_per_min": 60 * c["docs_per_second"], "speedup": c["docs_per_second"] / base if base else None,
        })
    return rows


def plan(profile_name: str, corpus: str, max_f1_drop: float = 2.0, eval_results: str | Path | None = None,
         bench_results: str | Path | None = None,
         budgets: Sequence[int] = (4096, 8192), max_docs: Sequence[int] = (1, 2, 4, 8, 10, 16),
         concurrency: Sequence[int] = (1, 4, 16), settings: ExtractionSettings | None = None,
         modes: Sequence[str] | None = None, documents: int | None = None, deadline: str | float | None = None,
         budget_usd: float | None = None, price: str | None = None, rpm: int | None = None,
         tpm: int | None = None) -> dict[str, Any]:
    """The grid of settings (budgets x documents per call x concurrency x execution modes) with
    predicted speed, time and cost for ``documents`` (default: the corpus's count), the fastest
    allowed setting, and the cheapest within ``deadline`` / the fastest within ``budget_usd``
    (:mod:`toolkit.plan._money`); ``price``: a model of LiteLLM's price map or a price file
    (default: what the profile is priced as); ``rpm``/``tpm``: a real account's limits per minute,
    in place of the profile's (its latencies stay)."""
    profile = resolve_profile(profile_name)
    if rpm or tpm:
        profile = dataclasses.replace(profile, requests_per_minute=rpm or profile.requests_per_minute,
                                      tokens_per_minute=tpm or profile.tokens_per_minute)
    prices = resolve_prices(profile.priced_as, price)
    cache = profile.cache_rules
    modes = modes_for(prices, cache, modes)
    deadline_hours = parse_hours(deadline)
    evaluation = json.loads(Path(eval_results).read_text()) if eval_results else None
    if settings is None:  # the prompt the eval run measured (its entity types), else entities only
        saved = (evaluation or {}).get("settings")
        settings = ExtractionSettings(**{**saved, "entity_types": tuple(saved["entity_types"])}) if saved \
            else ExtractionSettings(relationships=False)
    capabilities = profile_capabilities(profile)
    model = capabilities.tokenizer
    # an eval run says its layout (runs older than layouts were packed); else the backend's default
    layout = evaluation.get("layout", "packed") if evaluation else capabilities.layout(settings.layout)
    # compare like with like: an eval ran on the first N documents of its corpus
    stats = corpus_tokens(corpus, model, sample=int((evaluation or {}).get("documents", 2000)))
    prompt, per_doc = measure_reserves(settings, model)
    output_per_doc, quality, measured_output, measured_resends = DEFAULT_OUTPUT_PER_DOC, {}, {}, {}
    output_sd = DEFAULT_OUTPUT_PER_DOC  # spread of one document's output: assumed as large as its mean
    if evaluation:
        rows = evaluation["configs"]
        output_sd = rows[0].get("output_sd_per_doc")  # the reference run: one document per reply
        output_per_doc = sum(r["tokens_out"] for r in rows) / max(1, sum(r["extracted"] for r in rows))
        quality = {(r["max_docs"], r["budget"]): r for r in rows}
        # a model may answer a long batch more tersely: use each measured setting's own output size
        measured_output = {(r["max_docs"], r["budget"]): r["tokens_out"] / r["extracted"] for r in rows if r["extracted"]}
        # and its re-sent documents (after cut-off or partial replies): each costs a call too
        measured_resends = {(r["max_docs"], r["budget"]): r["missing_ids"] / r["batches"] for r in rows if r.get("batches")}
    # one document per call (an eval's intervals are paired with its own: its first configuration)
    reference = quality.get((1, max(budgets))) or next(iter(quality.values()), None)
    reference_f1 = reference["strict_f1"] if reference else None
    grid = []
    for mode, b, m, c in ((mode, b, m, c) for mode in modes for b in budgets for m in max_docs for c in concurrency):
        if mode == "batch-api" and c != max(concurrency):  # the provider schedules a batch: one row
            continue
        row = predict(profile, stats["mean"], prompt, per_doc, measured_output.get((m, b), output_per_doc),
                      m, c, settings, b, output_sd, measured_resends.get((m, b), 0.0), mode, cache)
        measured = quality.get((m, b))
        row["f1"] = measured["strict_f1"] if measured else None
        row["f1_drop_ci"] = measured.get("f1_drop_ci") if measured else None
        row["allowed"] = within_drop(measured, reference_f1, max_f1_drop)
        grid.append(row)
    base = next(r for r in grid if r["mode"] == "sync" and r["max_docs"] == 1 and r["concurrency"] == 1
                and r["budget"] == max(budgets))
    for r in grid:
        r["predicted_speedup"] = r["docs_per_min"] / base["docs_per_min"] if r["docs_per_min"] else None
    documents = documents or count_documents(corpus)
    price_rows(grid, documents, prices)
    candidates = [{**r, "config": f"max_docs={r['max_docs']},budget={r['budget']},concurrency={r['concurrency']}"
                   + ("" if r["mode"] == "sync" else f",mode={r['mode']}"),
                   "prompt_cache": False, "source": "predicted", "speedup": r["predicted_speedup"]} for r in grid]
    bench = json.loads(Path(bench_results).read_text()) if bench_results else None
    if bench:
        candidates += measured_candidates(bench, quality, reference, max_f1_drop)
    allowed = [r for r in candidates if r["allowed"] and r["speedup"] is not None]
    # fastest; on a tie, a measured one, then fewer calls in flight and smaller batches
    best = max(allowed, key=lambda r: (r["speedup"], r["source"] != "predicted", -_slots(r["concurrency"]),
                                       -r["max_docs"]))
    result: dict[str, Any] = {
        "kind": "plan", "profile": profile.to_dict(), "corpus": corpus, "corpus_tokens": stats, "layout": layout,
        "prompt_tokens": prompt, "per_document_tokens": per_doc, "output_tokens_per_doc": output_per_doc,
        "output_per_doc_source": "eval run" if evaluation else f"assumed {DEFAULT_OUTPUT_PER_DOC:g} (no eval run given)",
        "output_sd_per_doc": output_sd,
        "max_f1_drop_points": max_f1_drop, "quality_source": "eval run" if quality else "none: quality not constrained",
        "quality_judgement": judgement(list(quality.values()), max_f1_drop),
        "recommendation": best, "grid": grid, "measured": [c for c in candidates if c["source"] != "predicted"],
        "bench": str(bench_results) if bench_results else None,
        "money": {"documents": documents, "prices": prices.to_dict() if prices else None, "modes": modes,
                  **picks(grid, deadline_hours, budget_usd)},
    }
    if evaluation:
        result["predicted_vs_measured"] = [
            {"max_docs": r["max_docs"], "budget": r["budget"], "measured_speedup": r["speedup"],
             "predicted_speedup": next(g["predicted_speedup"] for g in grid if g["max_docs"] == r["max_docs"]
                                       and g["budget"] == r["budget"] and g["concurrency"] == 1 and g["mode"] == "sync"),
             }
            for r in evaluation["configs"] if (r["max_docs"], r["budget"]) in
            {(g["max_docs"], g["budget"]) for g in grid}
        ]
        for row in result["predicted_vs_measured"]:
            row["error"] = row["predicted_speedup"] / row["measured_speedup"] - 1 if row["measured_speedup"] else None
    return result
