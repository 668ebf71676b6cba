"""Anthropic's Message Batches behind the batch engine (issue 24, item 11): a batch request carries
exactly what a synchronous ``anthropic/`` call sends (system blocks with the cache mark, the JSON
schema, the output cap), results come back through the same settling code, and a run finishes
through them in process (the emulated provider speaking Anthropic's format) and over HTTP (the
project's emulator, :mod:`toolkit.testing.serve`, answering Anthropic's Message Batches routes and its
``/v1/messages`` for the synchronous fallback), billed at batch prices."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_batchapi_resume import (
    LM,
    RUN,
    _batch_rows,
    _interrupt,
    _killed,
    _paid_once,
    _session,
    _status_counts,
    _store,
    _sync_rows,
)

from toolkit.corpora import synthetic_documents
from toolkit.execution import ConcurrencyPolicy
from toolkit.jobs import ExtractionService, RunSettings, default_policy
from toolkit.jobs.batchapi import BatchApiSettings, build_requests
from toolkit.jobs.batchapi._anthropic import AnthropicBatches, openai_line
from toolkit.jobs.batchapi._emulated import EmulatedMessageBatches, LineFaults
from toolkit.jobs.batchapi._replies import settle_job
from toolkit.lm import resolve_lm
from toolkit.packing import Packer
from toolkit.testing.serve import EmulatorServer, ServeSettings

CLAUDE = "anthropic/claude-haiku-4-5"  # priced, batch prices included, in LiteLLM's map


def _server(faults: LineFaults | None = None, turnaround: float = 0.2) -> EmulatorServer:
    """The project's emulator (:mod:`toolkit.testing.serve`) on 127.0.0.1: ``/v1/messages`` at 100 times
    the profile's speed (each request body kept in its log), and the Message Batches routes over an
    :class:`EmulatedMessageBatches` on the wall clock (``server.batches``)."""
    batches = EmulatedMessageBatches(resolve_lm(LM).engine, turnaround=turnaround, faults=faults, wall_clock=True)
    return EmulatorServer(ServeSettings(profile="hosted-api@100", keep_bodies=True), batches).start()


def _bodies(server: EmulatorServer) -> list[dict[str, Any]]:
    """What the server was sent at ``/v1/messages``, in order."""
    return [e["body"] for e in server.stats()["log"] if e["route"] == "messages"]


@pytest.fixture
def anthropic(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing reaches a real provider (the server is http)
    servers: list[EmulatorServer] = []

    def start(faults: LineFaults | None = None, turnaround: float = 0.2) -> EmulatorServer:
        servers.append(_server(faults, turnaround))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning")
def test_a_batch_request_carries_what_a_synchronous_anthropic_call_sends(anthropic) -> None:  # noqa: ANN001
    server = anthropic()
    one_at_a_time = replace(default_policy(resolve_lm(CLAUDE, api_base=server.url)),
                            concurrency=ConcurrencyPolicy(max=1))
    service = ExtractionService(CLAUDE, api_base=server.url, policy=one_at_a_time)  # no one-document first call
    pack = Packer(service.packing_settings(max_docs=3)).pack(synthetic_documents(6))
    requests = build_requests(service.extractor, pack.batches, "claude-haiku-4-5", service.allowance)
    provider = AnthropicBatches(server.batches, service.resolved.lm.kwargs["prompt_cache"])
    sent = provider._requests[provider.upload("f.jsonl", b"".join(r.line for r in requests))]
    service.execute(pack, 6, progress=False)  # the same batches, synchronously
    synchronous = {tuple(b["output_config"]["format"]["schema"]["properties"]["results"]["items"]["properties"]["id"]
                         ["enum"]): {k: v for k, v in b.items() if k != "stream"} for b in _bodies(server)}
    assert len(sent) == len(synchronous) == 2
    for request, batch in zip(sent, pack.batches):
        assert request["custom_id"] == batch.batch_id and "stream" not in request["params"]
        assert request["params"] == synchronous[tuple(batch.document_ids)]
    assert sent[0]["params"]["system"][0]["cache_control"] == {"type": "ephemeral"}


RESULTS = {
    "succeeded": {"type": "succeeded", "message": {"content": [{"type": "text", "text": "{}"}],
                                                   "stop_reason": "max_tokens", "usage": {
                                                       "input_tokens": 7, "cache_read_input_tokens": 30,
                                                       "cache_creation_input_tokens": 3, "output_tokens": 5}}},
    "errored": {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}},
    "expired": {"type": "expired"}, "canceled": {"type": "canceled"},
}


def test_result_lines_read_as_output_lines() -> None:
    line = openai_line({"custom_id": "b1", "result": RESULTS["succeeded"]})
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 40, "completion_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 30}}
    errored = openai_line({"custom_id": "b1", "result": RESULTS["errored"]})
    assert errored["error"]["error"]["type"] == "overloaded_error"
    assert openai_line({"custom_id": "b1", "result": RESULTS["expired"]})["error"]["code"] == "expired"
    assert openai_line(["b1"]) == ["b1"]  # not a result line: left for the settling to refuse


@pytest.mark.parametrize("result", [None, "text", {"type": "succeeded", "message": None},
                                    {"type": "succeeded", "message": {"content": "plain"}},
                                    {"type": "succeeded", "message": {"content": [None, 3]}},
                                    {"type": "errored", "error": "text"}, {"type": "mystery"}])
def test_an_odd_result_sends_its_documents_back(result: Any) -> None:
    service = ExtractionService(LM)
    pack = Packer(service.packing_settings(max_docs=3)).pack(synthetic_documents(3))
    [batch] = pack.batches
    output = json.dumps(openai_line({"custom_id": batch.batch_id, "result": result})).encode()
    settled = settle_job(service.extractor, {batch.batch_id: batch}, output, None, "completed", 0.0)
    assert set(settled.retry) == set(batch.document_ids) and not settled.outcomes


# ------------------------------------------------------------------------------------ in process
def _claude_like(**kwargs: Any) -> AnthropicBatches:
    return AnthropicBatches(EmulatedMessageBatches(resolve_lm(LM).engine, **kwargs))


def test_a_run_through_emulated_message_batches_extracts_everything(tmp_path: Path) -> None:
    # 4 requests: answered, cut off, errored, unreadable
    db, provider = _store(tmp_path), _claude_like(faults=LineFaults(cut_every=2, fail_every=3, poison_every=4))
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and _sync_rows(db)  # what the batch did not answer: synchronously
    assert provider.transport.calls["create"] == 1
    assert [a["outcome"] for a in _batch_rows(db)] == ["ok", "ok", "error"]  # the unreadable line names no request
    _paid_once(db)


def test_an_anthropic_job_resumes_by_polling_and_a_forgotten_one_is_sent_again(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _claude_like()
    _killed(db, provider, on_submitted=_interrupt)
    provider = AnthropicBatches(provider.transport)  # a new process: the same provider
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and provider.transport.calls["create"] == 1
    db2 = _store(tmp_path / "again")
    _killed(db2, _claude_like(), on_submitted=_interrupt)
    restarted = _claude_like()  # the provider forgot the batch
    _session(db2, restarted)
    assert _status_counts(db2) == {"extracted": 20} and restarted.transport.calls["create"] == 1
    assert [j["status"] for j in db2.batch_jobs(RUN)] == ["lost", "completed"]


# ----------------------------------------------------------------------------------- over HTTP
@pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning")
def test_a_run_over_http_through_message_batches_at_batch_prices(anthropic, tmp_path: Path) -> None:  # noqa: ANN001
    import toolkit

    server = anthropic(LineFaults(fail_every=2))  # 3 requests: the second fails
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(30)))
    settings = RunSettings(api_base=server.url, mode="batch-api", batch_api=BatchApiSettings(poll_seconds=0.1))
    result = toolkit.run(corpus, lm=CLAUDE, store=f"sqlite:///{tmp_path / 'runs.db'}", run_name="c", progress=False,
                         settings=settings)
    s = result.summary.to_json()
    assert (s["extracted"], s["lost"], s["pending"]) == (30, 0, 0) and s["mode"] == "batch-api"
    assert server.batches.calls["create"] == s["batch_api_jobs"] == 1 and s["batch_api_failed_lines"] >= 1
    assert 0 < s["batch_api_calls"] < s["calls"] and _bodies(server)  # failed lines went to /v1/messages
    assert s["cost_usd"] > 0 and [j["status"] for j in result.store.batch_jobs("c")] == ["completed"]


def test_an_anthropic_job_never_created_before_a_crash_is_sent_again(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _claude_like()

    def crash_before_create(input_file_id: str, metadata: dict[str, str]) -> str:
        raise KeyboardInterrupt  # the requests lived in this process only

    provider.create = crash_before_create  # type: ignore[method-assign]
    _killed(db, provider)
    resumed = AnthropicBatches(provider.transport)  # a new process: the same provider, the requests gone
    _session(db, resumed)
    assert _status_counts(db) == {"extracted": 20} and len(resumed.transport.batches) == 1
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["lost", "completed"] and not _sync_rows(db)


# ----------------------------------------------------------------------------------- the bench
def test_claude_models_have_a_batch_api_so_bench_plans_its_configuration() -> None:
    from toolkit.measure._configs import plan_for

    caps = resolve_lm(CLAUDE).capabilities
    assert caps.batch_api and "batch_api" in [c.name for c in plan_for(caps)]
    assert "batch_api" not in [c.name for c in plan_for(resolve_lm("gemini/gemini-2.0-flash").capabilities)]


@pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning")
def test_bench_runs_the_batch_api_configuration_of_a_claude_model_against_the_emulator(
        anthropic, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    from toolkit.cli import main

    server = anthropic(turnaround=0.0)  # done when first polled: no wait of bench's 30 s between polls
    code = main(["bench", "--lm", CLAUDE, "--api-base", server.url, "--corpus", "synthetic", "--docs", "6",
                 "--settle", "0", "--batch-api", "--json"])  # a server at --api-base runs it when asked
    configs = {c["config"]: c for c in json.loads(capsys.readouterr().out)["configs"]}
    batch = configs["batch_api"]
    assert code == 0 and (batch["extracted"], batch["lost"], batch["batch_api_calls"]) == (6, 0, 1)
    assert server.batches.calls["create"] == 1 and 0 < batch["cost_usd"] < configs["B"]["cost_usd"]  # half price
