"""What the notebooks show, as tested functions, so their cells read like a short script: a corpus's
first documents with their gold (mapped onto the toolkit's types), the planner's candidates for the
quality/speed frontier, and the real-model results committed under ``benchmarks/results``."""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core import RESULTS_DIR, Entity

if TYPE_CHECKING:
    import polars as pl

    from toolkit.measure import BenchResult, EvalResult
    from toolkit.plan import Plan



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


def frontier_candidates(planned: Plan) -> pl.DataFrame:
    """The planner's candidates as :func:`toolkit.measure.frontier_chart` draws them: each sync
    setting of its grid (predicted speedup, the eval's F1) and each measured configuration."""
    import polars as pl

    predicted = [{"config": f"max_docs={r['max_docs']},budget={r['budget']},concurrency={r['concurrency']}",
                  "speedup": r["predicted_speedup"], "f1": r["f1"], "allowed": r["allowed"], "source": "predicted"}
                 for r in planned.grid if r["mode"] == "sync"]
    measured = [{k: r[k] for k in ("config", "speedup", "f1", "allowed", "source")} for r in planned.measured]
    # typed: without an eval every F1 is None, a column a chart cannot draw without its type
    schema = {"config": pl.Utf8, "speedup": pl.Float64, "f1": pl.Float64, "allowed": pl.Boolean, "source": pl.Utf8}
    return pl.DataFrame(predicted + measured, schema=schema)


EVAL_TABLE = ("config", "seconds", "speedup", "speedup_ci", "strict_precision", "strict_recall", "strict_f1",
              "strict_f1_ci", "f1_ratio_ci", "agreement_f1", "entities_per_doc", "zero_entity_docs", "leaks",
              "cost_per_1k_docs")
BENCH_TABLE = ("config", "max_docs", "concurrency", "seconds", "calls", "docs_per_second", "tokens_in", "tokens_out",
               "cost_per_1k_docs", "lost")


def eval_frame(quality: EvalResult | None) -> pl.DataFrame | None:
    """An eval's configurations as a frame, the columns a reader of ``03_measure`` compares (precision
    and recall beside F1; :func:`toolkit.measure.eval_table` is the CLI's); None without an eval."""
    import polars as pl

    return pl.DataFrame(quality.rows()).select(EVAL_TABLE) if quality is not None else None


def bench_frame(speed: BenchResult) -> pl.DataFrame:
    """A bench's configurations (A, A', B, C, D, the batch API) as a frame: speed, calls, tokens and cost."""
    import polars as pl

    return pl.DataFrame(speed.rows()).select(BENCH_TABLE)


def bench_headline(speed: BenchResult) -> dict[str, Any]:
    """A bench's headline: C against A and D, B against A, the rate-limit bound and documents lost."""
    return {**{k: speed.speedups.get(k) for k in ("speedup_b_vs_a", "speedup_c_vs_a", "speedup_c_vs_d")},
            "rate_limit_bound_docs_per_min": speed.rate_limit_bound_docs_per_min, "bound_share": speed.bound_share,
            "lost": speed.lost}


EVAL_COLUMNS = ("config", "max_docs", "seconds", "speedup", "strict_f1", "docs_per_second", "calls", "lost")
BENCH_COLUMNS = ("run", "config", "max_docs", "seconds", "docs_per_second", "calls", "lost")


def committed_results(folder: str | Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The eval and bench runs under ``folder`` (default: the repository's ``benchmarks/results``),
    one row per configuration with its run's folder name: ``(evals, benches)``. Calibrations and
    scale-out runs (their own tables) are left out; no folder gives two empty frames."""
    import polars as pl

    from toolkit.measure import read_result

    evals: list[dict[str, Any]] = []
    benches: list[dict[str, Any]] = []
    for path in sorted(glob.glob(str(Path(folder or RESULTS_DIR) / "*" / "results.json"))):
        try:
            result = read_result(path)
        except ValueError:  # not an eval or a bench
            continue
        run = Path(path).parent.name
        rows = [{"run": run, **{k: r.get(k) for k in EVAL_COLUMNS}} for r in result.rows()]
        (evals if result.kind == "eval" else benches).extend(rows)
    schema = {"run": pl.Utf8, **dict.fromkeys(EVAL_COLUMNS, pl.Float64), "config": pl.Utf8}
    frames = [pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema=schema)
              for rows in (evals, benches)]
    return frames[0], frames[1].select(BENCH_COLUMNS)
