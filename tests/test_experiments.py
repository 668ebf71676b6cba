"""eval and bench: quality against gold and speed, measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli import main


def test_eval_measures_quality_and_speedup_against_one_document_per_call(tmp_path: Path, ncbi_devel: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "24",
                 "--max-docs", "4,8", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    configs = {r["max_docs"]: r for r in result["configs"]}
    assert list(configs) == [1, 4, 8] and result["types_scored"] == ["DISEASE"]
    assert configs[1]["speedup"] == 1.0 and configs[8]["speedup"] > 1.0
    assert configs[8]["calls"] == 3 and configs[1]["calls"] == 24
    # the gazetteer answers every document the same way whatever the batch: quality must agree
    assert configs[8]["strict_f1"] == pytest.approx(configs[1]["strict_f1"]) and configs[8]["agreement_f1"] == 1.0
    assert 0 < configs[1]["strict_f1"] <= configs[1]["lenient_f1"] <= 1
    assert {p["position"] for p in result["by_position"] if p["config"].startswith("max_docs=8")} == set(range(8))
    for name in ("results.json", "configs.csv", "configs.parquet", "by_position.csv", "eval.png"):
        assert (out / name).stat().st_size > 0
    import polars as pl

    assert pl.read_parquet(out / "configs.parquet").height == 3


def test_bench_on_the_emulated_profile_reports_speedups_and_the_rate_limit_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: list) -> None:
    assert main(["bench", "--lm", "emulated:hosted-api", "--corpus", "synthetic", "--docs", "600",
                 "--out", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    configs = {c["config"]: c for c in r["configs"]}  # a list in run order, as eval's
    assert list(configs) == ["A", "B", "C"] and r["speedup_b_vs_a_warm"] is None  # no prompt cache
    assert r["lost"] == 0 and all(c["extracted"] == 600 for c in configs.values())
    a, b, c = (configs[k] for k in "ABC")
    assert a["calls"] == 600 and b["calls"] < 100
    assert r["speedup_b_vs_a"] == pytest.approx(a["seconds"] / b["seconds"])
    assert r["speedup_c_vs_a"] > r["speedup_b_vs_a"] > 1
    assert 0 < r["bound_share"] <= 1.0 and r["rate_limit_bound_docs_per_min"] > 0
    assert (tmp_path / "bench.png").exists() and not no_network
