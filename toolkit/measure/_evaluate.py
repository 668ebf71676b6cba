"""``evaluate``: quality of packed configurations against gold and their speed against one document per
call, each on the same documents in one run (:class:`~toolkit.measure._results.EvalResult`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core import Entity, Layout, Prices, resolve_prices
from toolkit.corpora import gold_mapping
from toolkit.extraction import ExtractionSettings, demo_ids
from toolkit.lm import ResolvedLM, resolve_lm
from toolkit.measure._evalcache import Reference, cache_root, load_reference, reference_key, save_reference
from toolkit.measure._evaluation import agreement, by_position, per_document, score
from toolkit.measure._results import ConfigFigures, EvalResult
from toolkit.measure._runs import ConfigRun, figures_of, machine, priced, prompt_digest, run_config
from toolkit.measure._stats import (
    DEFAULT_RESAMPLES,
    LEVEL,
    document_seconds,
    interval,
    micro_f1,
    ratio,
    resample_weights,
)

NO_INTERVALS = dict.fromkeys(("strict_f1_ci", "lenient_f1_ci", "f1_ratio_ci", "f1_drop_ci", "speedup_ci"))
Gold = dict[str, list[Entity]]


@dataclass(frozen=True)
class Resampled:
    """One configuration's figures on every bootstrap resample of the documents (the rows of the
    weights of :func:`toolkit.measure._stats.resample_weights`): strict and lenient micro F1, and the
    resampled documents' share of the run's seconds (:func:`toolkit.measure._stats.document_seconds`)."""

    strict: np.ndarray
    lenient: np.ndarray
    seconds: np.ndarray

    @classmethod
    def of(cls, run: ConfigRun | Reference, gold: Gold, weights: np.ndarray, **scoring: Any) -> Resampled:
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


@dataclass(frozen=True)
class Scoring:
    """What an eval scores against: the gold entities of each document, the types scored and the
    mapping of gold types onto them, and the bootstrap resamples' weights (None: no intervals)."""

    gold: Gold
    types: tuple[str, ...]
    gold_map: dict[str, str]
    weights: np.ndarray | None
    passes: int = 1

    def by_pass(self, pred: dict[str, list[Entity]]) -> list[float] | None:
        """Strict F1 of the entities the passes up to each one found (None for one pass)."""
        if self.passes == 1:
            return None
        return [score(self.gold, {d: [e for e in ents if e.pass_no <= k] for d, ents in pred.items()}, self.types,
                      gold_map=self.gold_map).f1 for k in range(1, self.passes + 1)]

    def figures(self, runs: Sequence[ConfigRun | Reference], prices: Prices | None
                ) -> tuple[list[ConfigFigures], list[dict[str, Any]]]:
        """Each run's figures with its quality, paired with the first run (one document per call),
        and the quality by position in the batch."""
        scoring = {"types": self.types, "gold_map": self.gold_map}
        resampled = [Resampled.of(r, self.gold, self.weights, **scoring) for r in runs] \
            if self.weights is not None else []
        reference = runs[0]
        rows: list[ConfigFigures] = []
        positions: list[dict[str, Any]] = []
        for i, r in enumerate(runs):
            pred = r.predictions
            strict = score(self.gold, pred, self.types, lenient=False, gold_map=self.gold_map)
            lenient = score(self.gold, pred, self.types, lenient=True, gold_map=self.gold_map)
            first = rows[0].strict_f1 if rows else None
            rows.append(priced(figures_of(r), prices).with_figures(
                strict_precision=strict.precision, strict_recall=strict.recall, strict_f1=strict.f1,
                lenient_precision=lenient.precision, lenient_recall=lenient.recall, lenient_f1=lenient.f1,
                agreement_f1=agreement(reference.predictions, pred, self.types).f1,
                speedup=reference.seconds / r.seconds if r.seconds else None,
                f1_vs_reference=strict.f1 / first if rows and first else None, strict_f1_by_pass=self.by_pass(pred),
                **(resampled[i].intervals(resampled[0]) if resampled else NO_INTERVALS),
                **{f"f1_{t}": score(self.gold, pred, (t,), gold_map=self.gold_map).f1 for t in self.types}))
            for pos, prf in by_position(self.gold, pred, r.positions, **scoring).items():
                positions.append({"config": r.name, "position": pos, **prf.to_dict()})
        return rows, positions


def _reference_path(probe: ResolvedLM, documents: Sequence[Any], settings: ExtractionSettings, layout: str,
                    budget: int, prompt_cache: bool, reference_cache: str | Path | bool) -> Path | None:
    """Where the reference of these documents, settings, model and machine is cached (None: no cache)."""
    if reference_cache is False:
        return None
    used = probe.capabilities.layout(layout)
    key = reference_key(documents, model_id=probe.model_id, capabilities=probe.capabilities.to_dict(),
                        settings=settings.to_dict(), prompt=prompt_digest(settings, used), layout=used,
                        budget=budget, prompt_cache=prompt_cache, machine=machine())
    return (cache_root() if reference_cache is True else Path(reference_cache)) / f"{key}.json"


def _gold(gold_source: str, limit: int | None) -> tuple[list[Any], Gold]:
    from toolkit.corpora import iter_gold

    pairs = list(iter_gold(gold_source))[: limit or None]
    if not pairs:
        raise ValueError(f"{gold_source}: no annotated documents")
    return [d for d, _ in pairs], {d.id: g for d, g in pairs}


def _settings(asked: tuple[str, ...], layout: Layout, gold: Gold, **prompt: Any) -> ExtractionSettings:
    """The prompt asking for ``asked`` (``prompt``: demos, shots, demo_choice, passes); its worked
    examples must not be evaluated documents."""
    settings = ExtractionSettings(entity_types=asked, relationships=False, layout=layout, **prompt)
    if shown := demo_ids(settings) & set(gold):
        raise ValueError(f"{len(shown)} demo documents of {settings.demos} are evaluated documents too "
                         f"({', '.join(sorted(shown))}): draw demos from another split (e.g. ncbi-disease-train)")
    return settings


def evaluate(gold_source: str, lm: str = "local", limit: int | None = 20, max_docs: Sequence[int] = (1, 4, 8),
             budgets: Sequence[int] = (8192,), types: Sequence[str] | None = None,
             prompt_cache: bool = False, layout: Layout = "auto", resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             reference_cache: str | Path | bool = True, fresh_reference: bool = False,
             price: str | None = None, api_base: str | None = None, rpm: int | None = None,
             tpm: int | None = None, **prompt: Any) -> EvalResult:
    """Quality and speed of each (max_docs, budget) on the same gold documents; one document per
    call is always the reference for speedup and agreement. ``prompt``: the worked examples (never
    evaluated documents) and passes, as :class:`~toolkit.extraction.ExtractionSettings` takes them
    (``demos``, ``shots``, ``demo_choice``, ``passes``, ``pass_mode``); ``strict_f1_by_pass``
    scores what the passes up to each one found.

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
    documents, gold = _gold(gold_source, limit)
    gold_map, scored = gold_mapping(e.type for g in gold.values() for e in g)
    settings = _settings(tuple(types) if types else scored, layout, gold, **prompt)
    probe = resolve_lm(lm, api_base=api_base)
    prices = resolve_prices(probe.priced_as, price)
    grid = [(1, budgets[0])] + [(m, b) for b in budgets for m in max_docs if (m, b) != (1, budgets[0])]
    path = _reference_path(probe, documents, settings, layout, budgets[0], prompt_cache, reference_cache)
    cached = None if path is None or fresh_reference else load_reference(path)
    runs: list[ConfigRun | Reference] = [cached] if cached else []
    for m, b in grid[len(runs):]:
        resolved = resolve_lm(lm, prompt_cache=prompt_cache, api_base=api_base)
        runs.append(run_config(resolved, settings, documents, f"max_docs={m},budget={b}", m, b, rpm=rpm, tpm=tpm,
                               api_base=api_base))
    reference = runs[0]
    stored = False
    if path is not None and isinstance(reference, ConfigRun) and not reference.run.stopped \
            and reference.figures.lost == 0:
        save_reference(path, reference.reference())
        stored = True
    weights = resample_weights(len(gold), resamples, seed) if resamples else None
    rows, positions = Scoring(gold, scored, gold_map, weights, settings.passes).figures(runs, prices)
    return EvalResult(
        gold=str(gold_source), lm=lm, model_id=probe.model_id, layout=probe.capabilities.layout(layout),
        capabilities=probe.capabilities.to_dict(), emulated=lm.startswith("emulated:"), documents=len(documents),
        types_scored=tuple(scored), gold_map=gold_map, prompt_cache=prompt_cache, settings=settings.to_dict(),
        machine=machine(), configs=tuple(rows), by_position=tuple(positions), reference_cached=cached is not None,
        reference_cache=str(path) if cached or stored else None, reference_created=cached.created if cached else None,
        bootstrap={"resamples": resamples, "seed": seed, "level": LEVEL, "over": "documents"},
        calls=() if lm.startswith("emulated:") else tuple(c for r in runs for c in r.calls(prompt_cache)))


EVAL_COLUMNS = ("config", "calls", "seconds", "speedup", "speedup_ci", "strict_precision", "strict_recall", "strict_f1",
                "strict_f1_ci", "lenient_f1", "lenient_f1_ci", "f1_vs_reference", "f1_ratio_ci", "agreement_f1",
                "leaks", "entities_per_doc", "zero_entity_docs", "cost_usd", "cost_per_1k_docs")
PASS_COLUMNS = ("pass_calls", "pass_entities", "strict_f1_by_pass")  # shown when the settings ask for passes


def eval_table(result: EvalResult) -> list[dict[str, Any]]:
    """An eval result's configurations as the CLI prints them and ``03_measure`` shows them: precision and
    recall beside F1, point figures beside their intervals; with several passes, what they added."""
    settings = result.settings or {}
    columns = EVAL_COLUMNS + (PASS_COLUMNS if settings.get("passes", 1) > 1 else ()) \
        + (("abbreviations",) if settings.get("abbreviations") else ())
    return [{k: row.get(k) for k in columns} for row in result.rows()]


def eval_note(result: EvalResult) -> str:
    """Where the reference came from and what the intervals are, in one line."""
    boot = result.bootstrap or {}
    where = (f"read from {result.reference_cache}" if result.reference_cached
             else f"run, cached in {result.reference_cache}" if result.reference_cache else "run")
    return (f"one document per call: {where}; intervals: {boot['level']:.0%} bootstrap over documents, "
            f"{boot['resamples']} resamples (0: none), paired with one document per call")
