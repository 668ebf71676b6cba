"""eval and bench: quality against gold and speed, measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.core import Document
from toolkit.measure._evalcache import load_reference, reference_key


@pytest.fixture(autouse=True)
def eval_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reference cache per test: a test's first eval runs one document per call."""
    folder = tmp_path / "eval-cache"
    monkeypatch.setenv("BATCHX_EVAL_CACHE_DIR", str(folder))
    return folder


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
    # intervals: the same answers on every document give a paired ratio of exactly 1 and a zero drop
    assert configs[8]["f1_ratio_ci"] == [1.0, 1.0] and configs[8]["f1_drop_ci"] == [0.0, 0.0]
    assert configs[1]["speedup_ci"] == [1.0, 1.0] and not result["reference_cached"]
    for r in configs.values():
        low, high = r["strict_f1_ci"]
        assert low < r["strict_f1"] < high and r["lenient_f1_ci"][0] < r["lenient_f1"] < r["lenient_f1_ci"][1]
    low, high = configs[8]["speedup_ci"]
    assert 1.0 < low < configs[8]["speedup"] < high
    for name in ("results.json", "configs.csv", "configs.parquet", "by_position.csv", "eval.png"):
        assert (out / name).stat().st_size > 0
    import polars as pl

    assert pl.read_parquet(out / "configs.parquet").height == 3
    lows = pl.read_csv(out / "configs.csv")["strict_f1_ci_low"].to_list()  # an interval: two columns
    assert lows == [r["strict_f1_ci"][0] for r in configs.values()]


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(documents per call, calls) of every configuration eval runs from now on."""
    import toolkit.measure._evaluate as evaluation

    runs, real = [], evaluation.run_config

    def counting(*args, **kwargs):
        run = real(*args, **kwargs)
        runs.append((run.max_docs, run.run.report.calls))
        return run

    monkeypatch.setattr(evaluation, "run_config", counting)
    return runs


def test_a_second_eval_takes_one_document_per_call_from_the_cache(ncbi_devel: Path, eval_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    runs = _runs(monkeypatch)

    def evaluate(*extra: str) -> dict:
        runs.clear()
        assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "12", "--json",
                     *extra]) == 0
        return json.loads(capsys.readouterr().out)

    first = evaluate("--max-docs", "4")
    assert not first["reference_cached"] and [m for m, _ in runs] == [1, 4] and runs[0][1] >= 12
    assert Path(first["reference_cache"]).parent == eval_cache
    second = evaluate("--max-docs", "8")
    assert [m for m, _ in runs] == [8]  # not one call at one document per call
    assert second["reference_cached"] and second["reference_cache"] == first["reference_cache"]
    reference = first["configs"][0]
    assert second["configs"][0] == reference  # the same figures, intervals included (same seed)
    eight = second["configs"][1]
    assert eight["speedup"] == pytest.approx(reference["seconds"] / eight["seconds"])
    assert eight["speedup_ci"][0] < eight["speedup"] < eight["speedup_ci"][1] and eight["f1_ratio_ci"] == [1.0, 1.0]
    # other documents, settings or model: a miss, and one document per call runs
    for extra in (["--limit", "13"], ["--types", "DISEASE,CHEMICAL"], ["--lm", "emulated:local-cpu"]):
        other = evaluate("--max-docs", "8", *extra)
        assert not other["reference_cached"] and [m for m, _ in runs] == [1, 8], extra
    fresh = evaluate("--max-docs", "8", "--fresh-reference")
    assert not fresh["reference_cached"] and [m for m, _ in runs] == [1, 8]
    assert fresh["configs"][0] == reference  # emulated: deterministic
    assert len(list(eval_cache.glob("*.json"))) == 4


def test_the_reference_key_covers_model_settings_and_every_document(tmp_path: Path) -> None:
    docs = [Document("a", "Cystic fibrosis."), Document("b", "No disease here.")]
    fields = {"model_id": "local/qwen@sha256:1", "settings": {"entity_types": ["DISEASE"]}, "layout": "parallel",
              "budget": 8192, "prompt_cache": False}
    key = reference_key(docs, **fields)
    assert reference_key(list(docs), **fields) == key
    assert reference_key(docs, **{**fields, "model_id": "local/qwen@sha256:2"}) != key
    assert reference_key(docs, **{**fields, "settings": {"entity_types": ["DISEASE", "GENE"]}}) != key
    assert reference_key(docs, **{**fields, "budget": 4096}) != key
    assert reference_key([docs[0], Document("b", "No disease here!")], **fields) != key  # text digest
    assert reference_key(docs[::-1], **fields) != key and reference_key(docs[:1], **fields) != key
    from toolkit.extraction import ExtractionSettings
    from toolkit.measure._runs import prompt_digest

    plain = ExtractionSettings(entity_types=("DISEASE",), relationships=False)
    assert prompt_digest(plain, "packed") == prompt_digest(ExtractionSettings(entity_types=("DISEASE",),
                                                                              relationships=False), "packed")
    no_demo = ExtractionSettings(entity_types=("DISEASE",), relationships=False, demo=False)
    assert prompt_digest(plain, "packed") != prompt_digest(no_demo, "packed")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "old.json").write_text(json.dumps({"version": 0}))
    assert load_reference(tmp_path / "bad.json") is None and load_reference(tmp_path / "old.json") is None
    assert load_reference(tmp_path / "missing.json") is None


def test_bench_on_the_emulated_profile_reports_speedups_and_the_rate_limit_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: list) -> None:
    assert main(["bench", "--lm", "emulated:hosted-api", "--corpus", "synthetic", "--docs", "600",
                 "--out", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    configs = {c["config"]: c for c in r["configs"]}  # a list in run order, as eval's
    assert list(configs) == ["A", "A_warm", "B", "C", "D", "batch_api"] and r["speedup_b_vs_a_warm"] is not None
    assert r["lost"] == 0 and all(c["extracted"] == 600 for c in configs.values())
    a, b, c = (configs[k] for k in "ABC")
    assert a["calls"] == 600 and b["calls"] < 100
    assert r["speedup_b_vs_a"] == pytest.approx(a["seconds"] / b["seconds"])
    assert r["speedup_c_vs_a"] > r["speedup_b_vs_a"] > 1 and r["speedup_d_vs_a"] > 1
    assert not configs["A"]["prompt_cache"] and configs["A_warm"]["prompt_cache"] and configs["D"]["prompt_cache"]
    # the bound is the limits' rate; paced smoothly, a short run (600 documents: two minutes) loses
    # the first call's round trip and the last's to it
    assert 0.7 < r["bound_share"] <= 1.0 and r["rate_limit_bound_docs_per_min"] > 0
    assert (tmp_path / "bench.png").exists() and not no_network
