"""What the notebooks show, as tested functions, so their cells read like a short script: a corpus's
first documents with their gold (mapped onto the toolkit's types), the measured quality/speed
frontier of the committed real-model evals, and the real-model results committed under ``benchmarks/results``."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core import RESULTS_DIR, Entity

if TYPE_CHECKING:
    import polars as pl

    from toolkit.measure import BenchResult, EvalResult



@dataclass(frozen=True)
class GoldSample:
    """A corpus's first documents (``texts``: id -> text), their gold annotations mapped onto the
    toolkit's entity types (``gold``: id -> entities; None for a corpus without annotations) and
    the types to ask for and score."""

    texts: Mapping[str, str]
    gold: Mapping[str, list[Entity]] | None
    types: tuple[str, ...]

    @classmethod
    def read(cls, corpus: str, limit: int, types: tuple[str, ...] = ("DISEASE",)) -> GoldSample:
        """The first ``limit`` documents of ``corpus``: with gold when it is PubTator or CoNLL (its
        types mapped as :func:`toolkit.corpora.gold_mapping` says), else the documents alone and
        ``types``."""
        from toolkit.corpora import CorpusError, gold_mapping, iter_gold, load_corpus

        try:
            pairs = [p for _, p in zip(range(limit), iter_gold(corpus))]
        except CorpusError:
            texts = {d.id: d.text for _, d in zip(range(limit), load_corpus(corpus))}
            return cls(texts, None, types)
        mapping, scored = gold_mapping(e.type for _, g in pairs for e in g)
        gold = {d.id: [Entity(e.text, mapping.get(e.type, e.type), d.id, start=e.start, end=e.end) for e in g]
                for d, g in pairs}
        return cls({d.id: d.text for d, _ in pairs}, gold, scored)


def eval_frame(quality: EvalResult | None) -> pl.DataFrame | None:
    """An eval's configurations as a frame, the CLI's columns (:func:`toolkit.measure.eval_table`:
    precision and recall beside F1); None without an eval."""
    import polars as pl

    from toolkit.measure import eval_table

    return pl.DataFrame(eval_table(quality)) if quality is not None else None


def bench_frame(speed: BenchResult) -> pl.DataFrame:
    """A bench's configurations (A, A', B, C, D, the batch API) as a frame: speed, calls, tokens and cost."""
    import polars as pl

    from toolkit.measure import bench_table

    return pl.DataFrame(bench_table(speed))


def bench_headline(speed: BenchResult) -> dict[str, Any]:
    """A bench's headline: C against A and D, B against A, the rate-limit bound and documents lost."""
    return {**{k: speed.speedups.get(k) for k in ("speedup_b_vs_a", "speedup_c_vs_a", "speedup_c_vs_d")},
            "rate_limit_bound_docs_per_min": speed.rate_limit_bound_docs_per_min, "bound_share": speed.bound_share,
            "lost": speed.lost}


def _committed_runs(folder: str | Path | None) -> Iterator[tuple[str, EvalResult | BenchResult]]:
    """(folder name, result) of each eval and bench run under ``folder`` (default: the repository's
    ``benchmarks/results``), in name order; calibrations and scale-out runs are left out."""
    from toolkit.measure import read_result

    for path in sorted(glob.glob(str(Path(folder or RESULTS_DIR) / "*" / "results.json"))):
        try:
            yield Path(path).parent.name, read_result(path)
        except ValueError:  # not an eval or a bench
            continue


EVAL_COLUMNS = ("config", "max_docs", "seconds", "speedup", "strict_f1", "docs_per_second", "calls", "lost")
BENCH_COLUMNS = ("run", "config", "max_docs", "seconds", "docs_per_second", "calls", "lost")


def committed_results(folder: str | Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The eval and bench runs under ``folder`` (default: the repository's ``benchmarks/results``),
    one row per configuration with its run's folder name: ``(evals, benches)``. Calibrations and
    scale-out runs (their own tables) are left out; no folder gives two empty frames."""
    import polars as pl

    evals: list[dict[str, Any]] = []
    benches: list[dict[str, Any]] = []
    for run, result in _committed_runs(folder):
        rows = [{"run": run, **{k: r.get(k) for k in EVAL_COLUMNS}} for r in result.rows()]
        (evals if result.kind == "eval" else benches).extend(rows)
    schema = {"run": pl.Utf8, **dict.fromkeys(EVAL_COLUMNS, pl.Float64), "config": pl.Utf8}
    frames = [pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema=schema)
              for rows in (evals, benches)]
    return frames[0], frames[1].select(BENCH_COLUMNS)


FRONTIER_COLUMNS = ("run", "setting", "max_docs", "documents", "docs_per_min", "strict_f1", "f1_lo", "f1_hi",
                    "strict_precision", "strict_recall", "agreement_f1", "cost_per_1k_docs", "command")


def quality_frontier(folder: str | Path | None = None, price: str | None = None) -> pl.DataFrame:
    """One point per setting of the committed real-model evals under ``folder`` (default: the
    repository's ``benchmarks/results``): measured strict F1 with its 95% interval (``f1_lo``,
    ``f1_hi``; null where the run had no bootstrap), measured documents per minute, cost per 1,000
    documents (where priced; ``price``: the tokens each setting used priced as this model of
    LiteLLM's price map or a price file, what they would cost there), and the ``command`` that
    measures that setting again. Emulated evals are left out: their entities come from a
    deterministic stand-in, not a model."""
    import polars as pl

    from toolkit.core import resolve_prices
    from toolkit.measure import EvalResult, priced

    prices = resolve_prices(None, price) if price else None
    rows = [{**_frontier_row(run, result, config.to_json()),
             **({"cost_per_1k_docs": priced(config, prices).cost_per_1k_docs} if prices else {})}
            for run, result in _committed_runs(folder) if isinstance(result, EvalResult) and not result.emulated
            for config in result.configs]
    schema = {k: pl.Utf8 if k in ("run", "setting", "command") else pl.Float64 for k in FRONTIER_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def _frontier_row(run: str, result: EvalResult, row: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration of an eval as a frontier point: what was measured, and how to measure it again."""
    settings = dict(result.settings or {})
    layout = result.layout or "packed"  # evals before layouts existed packed every batch
    choice, passes = settings.get("demo_choice", "random"), settings.get("passes", 1)
    demos = (f"program {Path(settings['program']).name}" if settings.get("program")
             else f"{settings['shots']} {'coverage ' if choice == 'coverage' else ''}shots of {settings['demos']}"
             if settings.get("demos") else "built-in example")
    setting = f"{row['max_docs']} per call, {layout}, {demos}" + (f", {passes} passes" if passes > 1 else "") \
        + (", abbreviations" if settings.get("abbreviations") else "")
    command = (f"python -m toolkit eval --gold {result.gold} --lm {result.lm} --limit {result.documents} "
               f"--max-docs {row['max_docs']} --layout {layout}"
               + (f" --demos {settings['demos']} --shots {settings['shots']}" if settings.get("demos") else "")
               + (" --demo-choice coverage" if choice == "coverage" else "")
               + (f" --passes {passes}" if passes > 1 else "")
               + (f" --program {settings['program']}" if settings.get("program") else "")
               + (" --abbreviations" if settings.get("abbreviations") else ""))
    ci = row.get("strict_f1_ci") or (None, None)
    seconds = row.get("seconds") or 0
    return {"run": run, "setting": setting, "max_docs": row["max_docs"], "documents": result.documents,
            "docs_per_min": 60 * result.documents / seconds if seconds else None, "strict_f1": row.get("strict_f1"),
            "f1_lo": ci[0], "f1_hi": ci[1], **{k: row.get(k) for k in ("strict_precision", "strict_recall",
                                                                        "agreement_f1", "cost_per_1k_docs")},
            "command": command}
