"""The planner: predicted throughput of settings, checked against measured runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.lm import _weights as weights


@pytest.fixture(autouse=True)
def eval_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference cache per test: each eval here runs one document per call."""
    monkeypatch.setenv("BATCHX_EVAL_CACHE_DIR", str(tmp_path / "eval-cache"))


def test_planner_predicts_the_measured_emulated_speedups(tmp_path: Path, ncbi_devel: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.plan import plan

    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "24",
                 "--max-docs", "4,8", "--out", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    result = plan("hosted-api", str(ncbi_devel), eval_results=tmp_path / "results.json")
    for row in result.predicted_vs_measured:
        assert abs(row["error"]) < 0.15, row
    best = result.recommendation
    fastest = max(r["docs_per_min"] for r in result.grid if r["allowed"] and r["docs_per_min"])
    assert best["allowed"] and best["docs_per_min"] == fastest
    assert best["bound_by"] == "tokens_per_minute"  # the hosted tier's TPM, not concurrency, binds at the top
    no_quality = plan("hosted-api", str(ncbi_devel))
    assert no_quality.quality_source.startswith("none") and "assumed" in no_quality.output_per_doc_source


def test_planner_excludes_settings_beyond_the_allowed_f1_drop(tmp_path: Path, ncbi_devel: Path) -> None:
    from toolkit.plan import plan

    if weights.cached_path() is None:  # local-cpu counts tokens with the local model's tokenizer
        pytest.skip("default model not cached: run `python -m toolkit models fetch`")
    results = {"configs": [
        {"max_docs": 1, "budget": 8192, "strict_f1": 0.50, "speedup": 1.0, "tokens_out": 400, "extracted": 10},
        {"max_docs": 4, "budget": 8192, "strict_f1": 0.49, "speedup": 2.0, "tokens_out": 400, "extracted": 10},
        {"max_docs": 8, "budget": 8192, "strict_f1": 0.40, "speedup": 3.0, "tokens_out": 400, "extracted": 10}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = plan("local-cpu", str(ncbi_devel), max_f1_drop=2.0, eval_results=path, concurrency=(1,))
    assert result.recommendation["max_docs"] == 4  # 8 per call is faster but loses 10 F1 points
    assert not any(r["allowed"] for r in result.grid if r["max_docs"] == 8)


def test_planner_recommends_a_warm_prompt_cache_when_a_bench_measured_it_faster(tmp_path: Path,
                                                                                 ncbi_devel: Path) -> None:
    from toolkit.plan import plan

    evaluation = {"configs": [
        {"max_docs": 1, "budget": 8192, "strict_f1": 0.50, "speedup": 1.0, "tokens_out": 400, "extracted": 10},
        {"max_docs": 4, "budget": 8192, "strict_f1": 0.40, "speedup": 2.0, "tokens_out": 400, "extracted": 10}]}

    def bench(warm: float, packed: float) -> Path:
        rows = {name: {"max_docs": m, "budget": 8192, "concurrency": "1", "docs_per_second": rate}
                for name, m, rate in (("A", 1, 0.1), ("A_warm", 1, warm), ("B", 4, packed))}
        path = tmp_path / f"bench-{warm}-{packed}.json"
        path.write_text(json.dumps({"configs": rows}))
        return path

    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    common = {"eval_results": tmp_path / "eval.json", "concurrency": (1,), "max_docs": (1, 4)}
    result = plan("hosted-api", str(ncbi_devel), bench_results=bench(0.16, 0.3), **common)
    best = result.recommendation  # B is fastest but loses 10 F1 points; A' keeps A's quality
    assert (best["config"], best["source"], best["speedup"]) == ("A_warm", "measured (bench)", pytest.approx(1.6))
    assert not next(r for r in result.measured if r["config"] == "B")["allowed"]
    slow_cache = plan("hosted-api", str(ncbi_devel), bench_results=bench(0.099, 0.3), **common)
    best = slow_cache.recommendation  # a warm cache slower than A is not recommended: one document per call
    assert best["max_docs"] == 1 and not best["prompt_cache"] and best["speedup"] == pytest.approx(1.0)


def test_planner_judges_the_allowed_f1_drop_against_the_interval(tmp_path: Path, ncbi_devel: Path) -> None:
    from toolkit.plan import plan

    def row(m: int, f1: float, drop_ci: list[float] | None) -> dict:
        return {"max_docs": m, "budget": 8192, "strict_f1": f1, "f1_drop_ci": drop_ci, "speedup": m / 2,
                "tokens_out": 400, "extracted": 10}

    # 4 per call drops 1 point, but its interval reaches 3.5: not shown to be within 2 points;
    # 8 per call drops 1.5 points, its interval at most 1.9: allowed
    rows = [row(1, 0.50, [0.0, 0.0]), row(4, 0.49, [-1.0, 3.5]), row(8, 0.485, [0.5, 1.9])]
    (tmp_path / "eval.json").write_text(json.dumps({"configs": rows}))
    common = {"eval_results": tmp_path / "eval.json", "concurrency": (1,), "max_docs": (1, 4, 8), "budgets": (8192,)}
    result = plan("hosted-api", str(ncbi_devel), max_f1_drop=2.0, **common)
    allowed = {r["max_docs"]: r["allowed"] for r in result.grid}
    assert allowed == {1: True, 4: False, 8: True} and "upper end" in result.quality_judgement
    assert result.recommendation["max_docs"] == 8
    assert next(r for r in result.grid if r["max_docs"] == 4)["f1_drop_ci"] == [-1.0, 3.5]
    # a looser allowance admits 4 too; the same eval without intervals is judged on the points
    assert all(r["allowed"] for r in plan("hosted-api", str(ncbi_devel), max_f1_drop=3.5, **common).grid)
    (tmp_path / "eval.json").write_text(json.dumps({"configs": [{**r, "f1_drop_ci": None} for r in rows]}))
    points = plan("hosted-api", str(ncbi_devel), max_f1_drop=2.0, **common)
    assert all(r["allowed"] for r in points.grid) and "point" in points.quality_judgement
