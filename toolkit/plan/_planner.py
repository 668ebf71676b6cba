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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core import Prices, resolve_prices
from toolkit.extraction import ExtractionSettings, output_allowance
from toolkit.jobs import measure_reserves
from toolkit.lm import CacheRules, Capabilities, Profile, load_profile
from toolkit.measure import BenchResult, ConfigFigures, EvalResult, profile_from_results
from toolkit.packing import get_counter
from toolkit.plan._money import describe, modes_for, parse_hours, picks, price_rows
from toolkit.plan._result import DEFAULT_OUTPUT_PER_DOC, Plan, Row

Setting = tuple[int, int]  # (documents per call, token budget)
GRID_COLUMNS = ("mode", "budget", "max_docs", "concurrency", "call_seconds", "docs_per_min", "bound_by",
                "predicted_speedup", "hours", "cost_per_1k_docs", "f1", "f1_drop_ci", "allowed")
MEASURED_COLUMNS = ("config", "max_docs", "concurrency", "prompt_cache", "docs_per_min", "speedup", "f1",
                    "f1_drop_ci", "allowed")


def within_drop(row: ConfigFigures | None, reference_f1: float | None, max_f1_drop: float) -> bool:
    """Whether an eval configuration ``row`` keeps quality within ``max_f1_drop`` points (see the
    module docstring): the upper end of its paired interval of the drop when it has one, else its
    point F1 against ``reference_f1``. Without quality figures (``reference_f1`` None) anything
    goes; a setting the eval did not run is not allowed."""
    if reference_f1 is None:
        return True
    if row is None:
        return False
    if row.f1_drop_ci:
        return row.f1_drop_ci[1] <= max_f1_drop
    return 100 * (reference_f1 - (row.strict_f1 or 0.0)) <= max_f1_drop


def judgement(rows: Sequence[ConfigFigures], max_f1_drop: float) -> str:
    """How :func:`within_drop` judges ``rows`` (an eval's configurations), in words."""
    if not rows:
        return "any setting (no eval run: quality not constrained)"
    if all(r.f1_drop_ci for r in rows):
        return f"the upper end of the paired 95% interval of the strict-F1 drop is at most {max_f1_drop:g} points"
    return f"the point strict-F1 drop is at most {max_f1_drop:g} points (the eval run has no intervals)"


def plan_summary(result: Plan) -> str:
    """What the CLI prints under a plan's tables: the recommendation, where quality and output
    sizes came from and how quality was judged, and predicted against measured speedups."""
    best = result.recommendation
    lines = [f"recommended ({best['source']}): {json.dumps({k: best[k] for k in ('config', 'speedup', 'f1')})}",
             f"quality: {result.quality_source}; allowed: {result.quality_judgement}",
             f"output tokens per document: {result.output_per_doc_source}"]
    money = result.money
    if money:
        priced = money["prices"]["model"] if money["prices"] else "unpriced"
        lines += [f"{money['documents']:,} documents at {priced}'s prices, modes {', '.join(money['modes'])}:",
                  f"  cheapest within the deadline ({money['deadline_hours'] or 'none'} h): "
                  f"{describe(money['cheapest_within_deadline'])}",
                  f"  fastest within the budget (${money['budget_usd'] or 'none'}): "
                  f"{describe(money['fastest_within_budget'])}"]
    lines += [f"max_docs={row['max_docs']}: predicted speedup {row['predicted_speedup']:.2f}, measured "
              f"{row['measured_speedup']:.2f} ({row['error']:+.0%})" for row in result.predicted_vs_measured or ()]
    return "\n".join(lines)


def write_plan(result: Plan, out: str | Path) -> Path:
    """``plan.json`` under ``out``."""
    path = Path(out) / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return path


def resolve_profile(name: str) -> Profile:
    """A shipped profile, a profile JSON, or one fitted on the calls an eval/bench ``results.json`` recorded."""
    path = Path(name)
    if path.suffix == ".json" and path.exists() and json.loads(path.read_text()).get("kind") in ("eval", "bench"):
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
    call = (profile.call_seconds(prompt - cached, output)
            + resends_per_batch * profile.call_seconds(single - cached, 0))
    slots = min(concurrency, profile.parallel_slots or concurrency)
    limits = {"concurrency": slots * n * 60 / call}
    if profile.requests_per_minute:
        limits["requests_per_minute"] = profile.requests_per_minute * n
    if profile.tokens_per_minute:
        allowance = (settings.max_tokens(n) if output_sd is None
                     else output_allowance(n, output_per_doc, output_sd, settings))
        free = cached if cache is not None and not cache.counts_towards_tpm else 0
        limits["tokens_per_minute"] = profile.tokens_per_minute * n / (prompt - free + allowance)
    bound = min(limits, key=limits.__getitem__)
    batch = mode == "batch-api"
    return {"mode": mode, "max_docs": max_docs, "docs_per_call": n, "budget": budget, "concurrency": concurrency,
            "call_seconds": call, "resends_per_batch": resends_per_batch,
            "docs_per_min": None if batch else limits[bound], "bound_by": "batch window" if batch else bound,
            "prompt_tokens": prompt, "output_tokens": output, "cached_tokens": cached}


def _slots(concurrency: int | str) -> int:
    """Calls in flight at most: ``4`` or ``"auto:16"``."""
    return int(str(concurrency).rpartition(":")[2] or 16)


@dataclass(frozen=True)
class Measured:
    """What an eval run tells the planner: each setting's figures (its quality), the output tokens per
    document (each measured setting's own, and their mean for the others), their spread in the one-document
    replies, and the documents re-sent per call (after cut-off or partial replies). Without an eval run:
    :data:`~toolkit.plan._result.DEFAULT_OUTPUT_PER_DOC`, its spread assumed as large as its mean."""

    quality: dict[Setting, ConfigFigures] = field(default_factory=dict)
    output_per_doc: float = DEFAULT_OUTPUT_PER_DOC
    output_sd: float | None = DEFAULT_OUTPUT_PER_DOC
    output: dict[Setting, float] = field(default_factory=dict)
    resends: dict[Setting, float] = field(default_factory=dict)

    @classmethod
    def of(cls, evaluation: EvalResult | None) -> Measured:
        if evaluation is None:
            return cls()
        rows = evaluation.configs
        return cls(
            quality={(r.max_docs, r.budget): r for r in rows},
            output_per_doc=sum(r.counts.tokens_out for r in rows) / max(1, sum(r.extracted for r in rows)),
            output_sd=rows[0].output_sd_per_doc,  # the reference run: one document per reply
            # a model may answer a long batch more tersely: each measured setting's own output size
            output={(r.max_docs, r.budget): r.counts.tokens_out / r.extracted for r in rows if r.extracted},
            # and its re-sent documents: each costs a call too
            resends={(r.max_docs, r.budget): r.counts.missing_ids / r.batches for r in rows if r.batches})

    def reference(self, budgets: Sequence[int]) -> ConfigFigures | None:
        """One document per call (an eval's intervals are paired with its own: its first configuration)."""
        return self.quality.get((1, max(budgets))) or next(iter(self.quality.values()), None)


def _ci(row: ConfigFigures | None) -> list[float] | None:
    return list(row.f1_drop_ci) if row is not None and row.f1_drop_ci is not None else None


def measured_candidates(bench: BenchResult, quality: dict[Setting, ConfigFigures], reference: ConfigFigures | None,
                        max_f1_drop: float) -> list[Row]:
    """A bench run's configurations as candidates: measured speedup over its A, and the eval's
    quality (``quality``: its configurations by documents per call and budget) for their documents
    per call (A' has A's, the eval's ``reference``: the same prompt, one document per call)."""
    base = next(c for c in bench.configs if c.config == "A").docs_per_second
    reference_f1 = reference.strict_f1 if reference else None
    rows = []
    for c in bench.configs:
        row = reference if c.max_docs == 1 else quality.get((c.max_docs, c.budget))
        rate = c.docs_per_second or 0.0
        rows.append({
            "config": c.config, "max_docs": c.max_docs, "budget": c.budget, "concurrency": c.concurrency,
            "prompt_cache": c.config == "A_warm", "source": "measured (bench)",
            "f1": row.strict_f1 if row else None, "f1_drop_ci": _ci(row),
            "allowed": within_drop(row, reference_f1, max_f1_drop),
            "docs_per_min": 60 * rate, "speedup": rate / base if base else None,
        })
    return rows


def _grid(profile: Profile, text_tokens: float, reserves: tuple[int, int], measured: Measured,
          settings: ExtractionSettings, modes: Sequence[str], budgets: Sequence[int], max_docs: Sequence[int],
          concurrency: Sequence[int], max_f1_drop: float) -> list[Row]:
    """The predicted rows of every setting, judged against the eval's quality, with their speedup over
    one document per call, one call at a time, at the largest budget."""
    prompt, per_doc = reserves
    reference = measured.reference(budgets)
    reference_f1 = reference.strict_f1 if reference else None
    grid = []
    for mode, b, m, c in ((mode, b, m, c) for mode in modes for b in budgets for m in max_docs for c in concurrency):
        if mode == "batch-api" and c != max(concurrency):  # the provider schedules a batch: one row
            continue
        row = predict(profile, text_tokens, prompt, per_doc, measured.output.get((m, b), measured.output_per_doc),
                      m, c, settings, b, measured.output_sd, measured.resends.get((m, b), 0.0), mode,
                      profile.cache_rules)
        quality = measured.quality.get((m, b))
        row["f1"] = quality.strict_f1 if quality else None
        row["f1_drop_ci"] = _ci(quality)
        row["allowed"] = within_drop(quality, reference_f1, max_f1_drop)
        grid.append(row)
    base = next(r for r in grid if r["mode"] == "sync" and r["max_docs"] == 1 and r["concurrency"] == 1
                and r["budget"] == max(budgets))
    for r in grid:
        r["predicted_speedup"] = r["docs_per_min"] / base["docs_per_min"] if r["docs_per_min"] else None
    return grid


def _best(candidates: Sequence[Row]) -> Row:
    """The fastest allowed candidate; on a tie, a measured one, then fewer calls in flight and smaller batches."""
    allowed = [r for r in candidates if r["allowed"] and r["speedup"] is not None]
    return max(allowed, key=lambda r: (r["speedup"], r["source"] != "predicted", -_slots(r["concurrency"]),
                                       -r["max_docs"]))


def _predicted_vs_measured(evaluation: EvalResult, grid: Sequence[Row]) -> tuple[Row, ...]:
    """Each setting the eval ran and the grid has: its measured speedup against the predicted one
    (one call at a time, sync)."""
    settings = {(g["max_docs"], g["budget"]) for g in grid}
    rows = []
    for r in evaluation.configs:
        if (r.max_docs, r.budget) not in settings:
            continue
        predicted = next(g["predicted_speedup"] for g in grid if g["max_docs"] == r.max_docs
                         and g["budget"] == r.budget and g["concurrency"] == 1 and g["mode"] == "sync")
        rows.append({"max_docs": r.max_docs, "budget": r.budget, "measured_speedup": r.speedup,
                     "predicted_speedup": predicted, "error": predicted / r.speedup - 1 if r.speedup else None})
    return tuple(rows)


def _account(profile_name: str, rpm: int | None, tpm: int | None) -> Profile:
    """The profile, with a real account's limits per minute in place of its own where said."""
    profile = resolve_profile(profile_name)
    if rpm or tpm:
        profile = dataclasses.replace(profile, requests_per_minute=rpm or profile.requests_per_minute,
                                      tokens_per_minute=tpm or profile.tokens_per_minute)
    return profile


def _money(grid: list[Row], documents: int, prices: Prices | None, modes: Sequence[str],
           deadline: str | float | None, budget_usd: float | None) -> dict[str, Any]:
    """Hours and cost of every grid row for ``documents``, and the picks under the deadline and budget."""
    price_rows(grid, documents, prices)
    return {"documents": documents, "prices": prices.to_dict() if prices else None, "modes": list(modes),
            **picks(grid, parse_hours(deadline), budget_usd)}


def plan(profile_name: str, corpus: str, max_f1_drop: float = 2.0,
         eval_results: EvalResult | str | Path | None = None, bench_results: BenchResult | str | Path | None = None,
         budgets: Sequence[int] = (4096, 8192), max_docs: Sequence[int] = (1, 2, 4, 8, 10, 16),
         concurrency: Sequence[int] = (1, 4, 16), settings: ExtractionSettings | None = None,
         modes: Sequence[str] | None = None, documents: int | None = None, deadline: str | float | None = None,
         budget_usd: float | None = None, price: str | None = None, rpm: int | None = None,
         tpm: int | None = None) -> Plan:
    """The grid of settings (budgets x documents per call x concurrency x execution modes) with
    predicted speed, time and cost for ``documents`` (default: the corpus's count), the fastest
    allowed setting, and the cheapest within ``deadline`` / the fastest within ``budget_usd``
    (:mod:`toolkit.plan._money`); ``price``: a model of LiteLLM's price map or a price file
    (default: what the profile is priced as); ``rpm``/``tpm``: a real account's limits per minute,
    in place of the profile's (its latencies stay). ``eval_results`` and ``bench_results``: an
    eval's and a bench's result, or the ``results.json`` they wrote."""
    profile = _account(profile_name, rpm, tpm)
    prices = resolve_prices(profile.priced_as, price)
    modes = modes_for(prices, profile.cache_rules, modes)
    evaluation = None if not eval_results else eval_results if isinstance(eval_results, EvalResult) \
        else EvalResult.from_json(eval_results)
    bench = None if not bench_results else bench_results if isinstance(bench_results, BenchResult) \
        else BenchResult.from_json(bench_results)
    # the prompt the eval run measured (its entity types), else entities only
    settings = settings or (evaluation and evaluation.extraction_settings()) or ExtractionSettings(relationships=False)
    capabilities = profile_capabilities(profile)
    # an eval run says its layout (runs older than layouts were packed); else the backend's default
    layout = (evaluation.layout or "packed") if evaluation else capabilities.layout(settings.layout)
    # compare like with like: an eval ran on the first N documents of its corpus
    stats = corpus_tokens(corpus, capabilities.tokenizer, sample=(evaluation.documents if evaluation else 0) or 2000)
    reserves = measure_reserves(settings, capabilities.tokenizer)
    measured = Measured.of(evaluation)
    grid = _grid(profile, stats["mean"], reserves, measured, settings, modes, budgets, max_docs, concurrency,
                 max_f1_drop)
    money = _money(grid, documents or count_documents(corpus), prices, modes, deadline, budget_usd)
    candidates = [{**r, "config": f"max_docs={r['max_docs']},budget={r['budget']},concurrency={r['concurrency']}"
                   + ("" if r["mode"] == "sync" else f",mode={r['mode']}"),
                   "prompt_cache": False, "source": "predicted", "speedup": r["predicted_speedup"]} for r in grid]
    if bench:
        candidates += measured_candidates(bench, measured.quality, measured.reference(budgets), max_f1_drop)
    return Plan(
        profile=profile.to_dict(), corpus=corpus, corpus_tokens=stats, layout=layout, prompt_tokens=reserves[0],
        per_document_tokens=reserves[1], output_tokens_per_doc=measured.output_per_doc,
        output_per_doc_source="eval run" if evaluation else f"assumed {DEFAULT_OUTPUT_PER_DOC:g} (no eval run given)",
        output_sd_per_doc=measured.output_sd, max_f1_drop_points=max_f1_drop,
        quality_source="eval run" if measured.quality else "none: quality not constrained",
        quality_judgement=judgement(list(measured.quality.values()), max_f1_drop), recommendation=_best(candidates),
        grid=tuple(grid), measured=tuple(c for c in candidates if c["source"] != "predicted"),
        bench=str(bench_results) if isinstance(bench_results, (str, Path)) else None, money=money,
        predicted_vs_measured=_predicted_vs_measured(evaluation, grid) if evaluation else None)
