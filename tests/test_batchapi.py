"""The batch-API mode (issue 19, items 3-4): request lines equal to the synchronous calls, files
split within limits, jobs kept in the store, and full runs over HTTP through the real LiteLLM
client against the project's own server: failed lines, cut-off replies, an expired batch, a run
stopped after submission and resumed across a server restart. Every document ends extracted or
failed with a reason; nothing is lost and nothing is submitted twice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from toolkit.corpora import synthetic_documents
from toolkit.execution import ConcurrencyPolicy
from toolkit.jobs import ExtractionService, default_policy
from toolkit.jobs.batchapi import (
    BatchApiSettings,
    BatchLimits,
    build_requests,
    is_batch_priced,
    run_batch_api,
    split_files,
)
from toolkit.jobs.batchapi._emulated import EmulatedBatches, LineFaults
from toolkit.lm import resolve_lm
from toolkit.packing import Packer
from toolkit.store import open_store

LM = "emulated:hosted-api"


def _corpus(tmp_path: Path, n: int = 50) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(n)))
    return path


def _requests(n: int = 30, max_docs: int = 5):
    # one call at a time: a concurrent run's first call carries one document (see stream._probe_first)
    one_at_a_time = replace(default_policy(resolve_lm(LM)), concurrency=ConcurrencyPolicy(max=1))
    service = ExtractionService(LM, policy=one_at_a_time)
    docs = synthetic_documents(n)
    pack = Packer(service.packing_settings(max_docs=max_docs)).pack(docs)
    return service, pack, build_requests(service.extractor, pack.batches, "gpt-4o-mini", service.allowance)


# ------------------------------------------------------------------------------------ requests
def test_request_lines_carry_what_the_synchronous_calls_send() -> None:
    service, pack, requests = _requests(12, max_docs=4)
    sent: list[list[dict]] = []
    engine = service.resolved.engine
    original = engine.complete

    async def spy(request):  # noqa: ANN001, ANN202 - records what the sync path sends, then answers
        from toolkit.lm._engine import request_messages

        sent.append(request_messages(request))
        return await original(request)

    engine.complete = spy
    service.execute(pack, 12, progress=False)
    bodies = [json.loads(r.line)["body"] for r in requests]
    assert sorted(json.dumps(b["messages"]) for b in bodies) == sorted(json.dumps(m) for m in sent)
    for request, body in zip(requests, bodies):
        line = json.loads(request.line)
        assert line["custom_id"] == request.batch.batch_id and line["url"] == "/v1/chat/completions"
        assert line["method"] == "POST" and body["model"] == "gpt-4o-mini"
        ids = body["response_format"]["json_schema"]["schema"]["properties"]["results"]["items"]["properties"]["id"]
        assert ids["enum"] == request.batch.document_ids
        assert body["max_tokens"] == service.allowance(request.batch) and body["temperature"] == 0.0


def test_files_are_split_by_request_count_and_by_bytes() -> None:
    _, _, requests = _requests(30, max_docs=3)
    assert len(requests) == 10
    by_count = split_files(requests, BatchLimits(max_requests=4))
    assert [len(f) for f in by_count] == [4, 4, 2]
    biggest = max(len(r.line) for r in requests)
    by_bytes = split_files(requests, BatchLimits(max_bytes=2 * biggest))
    assert all(sum(len(r.line) for r in f) <= 2 * biggest for f in by_bytes) and len(by_bytes) >= 5
    assert [r.custom_id for f in by_bytes for r in f] == [r.custom_id for r in requests]  # order kept, none lost
    with pytest.raises(ValueError, match="above the file limit"):
        split_files(requests, BatchLimits(max_bytes=biggest - 1))


def test_the_store_keeps_batch_jobs_and_their_documents(tmp_path: Path) -> None:
    db = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.start_run("r", "lm", "m", {})
    db.save_batch_job("r", "job-00000", {"r:b1": ["a", "b"], "r:b2": ["c"]}, "file-1")
    db.update_batch_job("r", "job-00000", batch_id="batch_1", status="submitted")
    [job] = db.batch_jobs("r", open_only=True)
    assert (job["input_file_id"], job["batch_id"], job["requests"]) == ("file-1", "batch_1", {"r:b1": ["a", "b"],
                                                                                          "r:b2": ["c"]})
    db.update_batch_job("r", "job-00000", status="completed")
    assert db.batch_jobs("r", open_only=True) == [] and len(db.batch_jobs("r")) == 1
    assert db.count("batchx_batch_docs", "r") == 3
    with pytest.raises(ValueError):
        db.update_batch_job("r", "job-00000", nonsense=1)


# ------------------------------------------------------------------------ in process (the bench)
def _lost(run) -> int:  # noqa: ANN001
    return sum(1 for o in run.report.outcomes if o.status == "pending")


def test_run_batch_api_in_virtual_time_extracts_everything_at_batch_prices() -> None:
    docs = synthetic_documents(50)
    service = ExtractionService(LM)
    run = run_batch_api(service, docs, max_docs=10)
    sync = ExtractionService(LM).run(docs, max_docs=10, progress=False)
    assert run.report.extracted == 50 and _lost(run) == 0
    assert {o.id: len(o.entities) for o in run.report.outcomes} == {o.id: len(o.entities) for o in sync.report.outcomes}
    assert all(is_batch_priced(a) for a in run.attempts) and run.counts.tokens_in > 0
    assert run.report.seconds >= 300  # the emulated batch's turnaround, virtual


@pytest.mark.parametrize("faults", [LineFaults(fail_every=3, cut_every=4), LineFaults(expire=True),
                                    LineFaults(fail_batch=True)], ids=["lines", "expired", "failed-batch"])
def test_what_a_batch_did_not_answer_goes_through_the_synchronous_executor(faults: LineFaults) -> None:
    docs = synthetic_documents(50)
    service = ExtractionService(LM)
    provider = EmulatedBatches(service.resolved.engine, faults=faults)
    run = run_batch_api(service, docs, max_docs=5, provider=provider, settings=BatchApiSettings(poll_seconds=60))
    outcomes = run.report.outcomes
    assert _lost(run) == 0 and all(o.status == "extracted" or o.reason for o in outcomes)
    assert run.report.extracted == 50
    sync_calls = [a for a in run.attempts if not is_batch_priced(a)]
    assert sync_calls, "the unanswered documents were sent synchronously"
    if faults.fail_batch:
        assert not any(is_batch_priced(a) for a in run.attempts)


# ----------------------------------------------------------------------------------- over HTTP
@pytest.fixture
def server(tmp_path: Path):
    from toolkit.jobs.batchapi.server import start_server

    servers = []

    def start(faults: LineFaults | None = None):  # noqa: ANN202
        servers.append(start_server(tmp_path / "server-state", LM, turnaround=0.3, faults=faults))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def _run(tmp_path: Path, url: str, **kwargs):  # noqa: ANN202
    import toolkit
    from toolkit.jobs import RunSettings

    settings = RunSettings(api_base=url, mode=kwargs.pop("mode", "batch-api"),
                           batch_api=BatchApiSettings(poll_seconds=0.1, **kwargs.pop("batch_api", {})))
    return toolkit.run(_corpus(tmp_path), lm=LM, store=f"sqlite:///{tmp_path / 'runs.db'}", run_name="b1",
                       settings=settings, progress=False, **kwargs)


@pytest.mark.slow
def test_a_batch_api_run_over_http_extracts_every_document(tmp_path: Path, server) -> None:  # noqa: ANN001
    srv = server()
    result = _run(tmp_path, srv.url, batch_api={"limits": BatchLimits(max_requests=3)})
    s = result.summary.to_json()
    assert (s["extracted"], s["failed"], s["lost"], s["pending"]) == (50, 0, 0, 0) and s["mode"] == "batch-api"
    jobs = result.store.batch_jobs("b1")
    assert srv.batches.calls["upload"] == srv.batches.calls["create"] == len(jobs) == s["batch_api_jobs"] >= 2
    assert all(j["status"] == "completed" and j["batch_id"] in srv.batches.batches for j in jobs)
    assert s["batch_api_calls"] == s["calls"] == s["batches"] and s["cost_usd"] > 0


@pytest.mark.slow
def test_failed_lines_and_an_expired_batch_over_http_end_extracted(tmp_path: Path, server) -> None:  # noqa: ANN001
    srv = server(LineFaults(fail_every=2, expire=True))
    s = _run(tmp_path, srv.url).summary.to_json()
    assert (s["extracted"], s["lost"], s["pending"]) == (50, 0, 0)
    assert s["batch_api_failed_lines"] > 0 and s["calls"] > s["batch_api_calls"]  # the rest went synchronously


@pytest.mark.slow
def test_a_run_stopped_after_submission_resumes_by_polling_the_same_batch(tmp_path: Path, server) -> None:  # noqa: ANN001
    first = server()

    def stop(job: str, batch_id: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C right after the batch is recorded

    stopped = _run(tmp_path, first.url, batch_api={"on_submitted": stop}).summary.to_json()
    assert stopped["pending"] == 50 and stopped["stop_reason"] and stopped["lost"] == 0
    db = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    [job] = db.batch_jobs("b1", open_only=True)
    with pytest.raises(ValueError, match="still open at the provider"):  # in sync mode it would pay twice
        _run(tmp_path, first.url, resume=True, mode="sync")
    first.stop()
    second = server()  # restarted on the same state, another port
    resumed = _run(tmp_path, second.url, resume=True).summary.to_json()
    assert (resumed["extracted"], resumed["lost"], resumed["pending"]) == (50, 0, 0)
    assert first.batches.calls["upload"] == first.batches.calls["create"] == 1
    assert second.batches.calls["upload"] == second.batches.calls["create"] == 0
    assert second.batches.calls["retrieve"] >= 1 and db.batch_jobs("b1")[0]["batch_id"] == job["batch_id"]
    assert resumed["batch_api_calls"] == resumed["calls"]  # nothing was sent again, synchronously either


def test_batch_job_tables_in_the_iris_dialect_have_bounded_columns() -> None:
    from toolkit.store._dialect import iris_dialect

    ddl = [s for s in iris_dialect().create_statements() if "batchx_batch_" in s]
    assert len(ddl) == 2 and all("VARCHAR(32000)" not in s and "TEXT" not in s for s in ddl)
    assert "PRIMARY KEY (run_id, job_key, doc_id)" in ddl[1]


def test_the_cli_takes_the_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    code = main(["extract", "--corpus", str(_corpus(tmp_path, 20)), "--lm", LM, "--mode", "batch-api",
                 "--poll-seconds", "600", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--run", "c", "--json"])
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert code == 0 and summary["mode"] == "batch-api" and summary["extracted"] == 20 and summary["lost"] == 0
    with pytest.raises(SystemExit):
        main(["extract", "--mode", "nonsense"])
