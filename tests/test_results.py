"""Typed results: an eval's, a bench's and a plan's values turned into JSON only where a file is written
or read, and committed results read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.measure import BenchResult, ConfigFigures, EvalResult, evaluate, read_result, write_results
from toolkit.plan import Plan, plan

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COMMITTED = sorted(p for p in RESULTS.glob("*/results.json")
                   if json.loads(p.read_text()).get("kind") in ("eval", "bench"))


@pytest.fixture(scope="module")
def quality() -> EvalResult:
    gold = RESULTS.parents[2] / "shared" / "corpora" / "ncbi-disease" / "devel.pubtator"
    if not gold.exists():
        pytest.skip(f"NCBI disease corpus not found at {gold}")
    return evaluate(str(gold), lm="emulated:hosted-api", limit=12, max_docs=(4,), resamples=200,
                    reference_cache=False)


def test_committed_results_are_read_and_written_back_to_the_same_json() -> None:
    assert len(COMMITTED) >= 10
    for path in COMMITTED:
        data = json.loads(path.read_text())
        result = read_result(path)
        assert isinstance(result, EvalResult if data["kind"] == "eval" else BenchResult)
        assert json.dumps(result.to_json()) == json.dumps(data), path  # the same keys, in the same order
        assert type(result).from_json(result.to_json()) == result
        assert result.configs and all(isinstance(c, ConfigFigures) for c in result.configs)
        names = list(data["configs"]) if isinstance(data["configs"], dict) else [c["config"] for c in data["configs"]]
        assert [c.config for c in result.configs] == names


def test_a_configuration_keeps_its_counts_types_and_unknown_keys_apart() -> None:
    row = {"config": "B", "max_docs": 4, "budget": 8192, "calls": 3, "tokens_out": 120, "extracted": 12,
           "f1_DISEASE": 0.5, "f1_drop_ci": [0.0, 1.5], "batch_api_calls": 2, "batch_api_tokens_in": 10,
           "a_future_figure": "kept"}
    figures = ConfigFigures.from_json(row)
    assert figures.counts.calls == 3 and figures.counts.tokens_out == 120 and figures.tokens_out_per_doc == 10
    assert figures.f1_by_type == {"DISEASE": 0.5} and figures.f1_drop_ci == (0.0, 1.5)
    assert figures.batch_api is not None and figures.batch_api.calls == 2 and figures.batch_api.tokens_in == 10
    assert figures.extra == {"a_future_figure": "kept"} and figures.strict_f1 is None
    assert figures.to_json() == row and list(figures.to_json()) == list(row)
    assert figures.with_figures(strict_f1=0.7).to_json() == {**row, "strict_f1": 0.7}


def test_an_old_result_without_the_keys_added_since_is_read() -> None:
    minimal = EvalResult.from_json({"configs": [{"max_docs": 1, "budget": 8192, "strict_f1": 0.5, "tokens_out": 40,
                                                 "extracted": 10}]})
    assert minimal.kind == "eval" and minimal.layout is None and minimal.calls == () and minimal.bootstrap is None
    assert minimal.reference is not None and minimal.reference.strict_f1 == 0.5
    assert minimal.to_json() == {"configs": [{"max_docs": 1, "budget": 8192, "strict_f1": 0.5, "tokens_out": 40,
                                              "extracted": 10}]}
    by_name = BenchResult.from_json({"kind": "bench", "configs": {"A": {"max_docs": 1, "docs_per_second": 0.1}}})
    assert by_name.config("A") is not None and by_name.config("A").docs_per_second == 0.1


def test_an_eval_result_round_trips_through_its_file(quality: EvalResult, tmp_path: Path) -> None:
    assert quality.kind == "eval" and [c.max_docs for c in quality.configs] == [1, 4]
    assert quality.configs[0].speedup == 1.0 and quality.configs[1].speedup > 1.0
    write_results(quality, tmp_path)
    read = EvalResult.from_json(tmp_path / "results.json")
    assert read == quality and read.to_json() == json.loads(json.dumps(quality.to_json()))
    assert list(quality.to_json()) == list(EvalResult.ORDER)


def test_a_plan_from_an_eval_in_memory_equals_the_plan_from_its_file(quality: EvalResult, tmp_path: Path,
                                                                        ncbi_devel: Path) -> None:
    write_results(quality, tmp_path)
    common = {"budgets": (8192,), "max_docs": (1, 4, 8), "concurrency": (1, 4)}
    in_memory = plan("hosted-api", str(ncbi_devel), eval_results=quality, **common)
    from_file = plan("hosted-api", str(ncbi_devel), eval_results=tmp_path / "results.json", **common)
    assert isinstance(in_memory, Plan) and in_memory == from_file
    assert in_memory.quality_source == "eval run" and in_memory.predicted_vs_measured
    data = json.loads(json.dumps(in_memory.to_json()))
    assert data["kind"] == "plan" and Plan.from_json(data) == in_memory


def test_a_plan_reads_a_bench_result_in_memory(quality: EvalResult, ncbi_devel: Path) -> None:
    def row(name: str, m: int, rate: float) -> dict:
        return {"config": name, "max_docs": m, "budget": 8192, "concurrency": "1", "docs_per_second": rate}

    bench = BenchResult.from_json({"kind": "bench", "configs": [row("A", 1, 0.1), row("B", 4, 0.3)]})
    planned = plan("hosted-api", str(ncbi_devel), eval_results=quality, bench_results=bench, budgets=(8192,),
                   max_docs=(1, 4), concurrency=(1,))
    assert [r["config"] for r in planned.measured] == ["A", "B"] and planned.bench is None
    assert planned.measured[1]["speedup"] == pytest.approx(3.0)
