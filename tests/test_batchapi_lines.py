"""One bad output line, a provider that errs, or a batch the provider forgot never makes a
batch-API run impossible to finish (issue 24, item 5): a poison line sends its documents to the
synchronous fallback, a failing ``retrieve`` is polled again and then stops the run (resumable), an
unknown batch id is reported and its documents are sent again once."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_batchapi_resume import (
    DOCS,
    LM,
    RUN,
    _batch_rows,
    _interrupt,
    _killed,
    _paid_once,
    _provider,
    _session,
    _status_counts,
    _store,
    _sync_rows,
)

from toolkit.corpora import synthetic_documents
from toolkit.jobs import ExtractionService
from toolkit.jobs.batchapi import build_requests
from toolkit.jobs.batchapi._emulated import EmulatedBatches, LineFaults, answer
from toolkit.jobs.batchapi._replies import settle_job
from toolkit.lm import resolve_lm
from toolkit.packing import Packer


def _two_requests() -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """A service, two requests of three documents and a good output line for each."""
    service = ExtractionService(LM)
    pack = Packer(service.packing_settings(max_docs=3)).pack(synthetic_documents(6))
    requests = build_requests(service.extractor, pack.batches, "gpt-4o-mini", service.allowance)
    engine = resolve_lm(LM).engine
    lines = [{"id": f"req-{n}", "custom_id": r.custom_id, "error": None,
              "response": {"status_code": 200, "body": answer(engine, json.loads(r.line)["body"])}}
             for n, r in enumerate(requests)]
    return service, {r.custom_id: r.batch for r in requests}, lines


def _raw(line: Any) -> bytes:
    return json.dumps(line).encode()


def _body(line: dict[str, Any]) -> dict[str, Any]:
    return line["response"]["body"]


POISON: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not JSON": lambda line: _raw(line)[:40],
    "a list": lambda line: _raw([line["custom_id"]]),
    "a string": lambda line: _raw(line["custom_id"]),
    "null": lambda line: b"null",
    "custom_id a number": lambda line: _raw({**line, "custom_id": 7}),
    "response a string": lambda line: _raw({**line, "response": "oops"}),
    "error body as text": lambda line: _raw({**line, "response": {"status_code": 500, "body": {"error": "text"}}}),
    "error body a list": lambda line: _raw({**line, "response": {"status_code": 429, "body": ["slow down"]}}),
    "error a list": lambda line: _raw({**line, "error": ["broken"]}),
    "body null": lambda line: _raw({**line, "response": {"status_code": 200, "body": None}}),
    "body a list": lambda line: _raw({**line, "response": {"status_code": 200, "body": [1]}}),
    "choices [null]": lambda line: _raw({**line, "response": {"status_code": 200, "body": {**_body(line),
                                                                                          "choices": [None]}}}),
    "choices a dict": lambda line: _raw({**line, "response": {"status_code": 200, "body": {**_body(line),
                                                                                          "choices": {"0": 1}}}}),
    "content a list": lambda line: _raw({**line, "response": {"status_code": 200, "body": {
        **_body(line), "choices": [{"message": {"content": [{"text": "x"}]}, "finish_reason": "stop"}]}}}),
    "message a string": lambda line: _raw({**line, "response": {"status_code": 200, "body": {
        **_body(line), "choices": [{"message": "hello", "finish_reason": "stop"}]}}}),
}


@pytest.mark.parametrize("poison", list(POISON), ids=list(POISON))
def test_a_poison_line_sends_its_documents_to_the_fallback_and_spares_the_others(poison: str) -> None:
    service, requests, lines = _two_requests()
    first, second = list(requests)
    output = POISON[poison](copy.deepcopy(lines[0])) + b"\n" + _raw(lines[1]) + b"\n"
    settled = settle_job(service.extractor, requests, output, None, "completed", 0.0)
    assert set(settled.retry) == set(requests[first].document_ids)  # its documents: the synchronous fallback
    assert all(r.startswith("batch API: ") for r in settled.retry.values())
    assert {o.id for o in settled.outcomes} == set(requests[second].document_ids)
    ok = [a for a in settled.attempts if a.outcome == "ok"]
    assert len(ok) == 1 and ok[0].document_ids == tuple(requests[second].document_ids)


@pytest.mark.parametrize("usage", [{"prompt_tokens": 900, "completion_tokens": 50, "prompt_tokens_details": "x"},
                                   {"prompt_tokens": 900, "completion_tokens": 50, "prompt_tokens_details": [3]},
                                   {"prompt_tokens": "900", "completion_tokens": None, "prompt_tokens_details": None},
                                   {"prompt_tokens": -5, "completion_tokens": 1.5e300, "cache_read_input_tokens": "x"},
                                   {"prompt_tokens": 100, "completion_tokens": 5,
                                    "prompt_tokens_details": {"cached_tokens": 10 ** 6}},
                                   "not a dict", None],
                         ids=["details text", "details list", "strings", "negative, huge", "cached > prompt",
                              "usage text", "usage null"])
def test_odd_usage_is_read_as_counts_never_a_crash(usage: Any) -> None:
    service, requests, lines = _two_requests()
    for line in lines:
        _body(line)["usage"] = usage
    output = b"\n".join(_raw(line) for line in lines)
    settled = settle_job(service.extractor, requests, output, None, "completed", 0.0)
    assert not settled.retry and len(settled.outcomes) == 6
    for attempt in settled.attempts:
        counts = attempt.counts
        assert all(isinstance(v, int) and 0 <= v < 10 ** 9 for v in (counts.tokens_in, counts.tokens_out,
                                                                       counts.cached_tokens))
        assert counts.cached_tokens <= counts.tokens_in


def test_a_line_for_a_request_never_sent_and_a_duplicate_line_change_nothing() -> None:
    service, requests, lines = _two_requests()
    stranger = {**lines[0], "custom_id": "b999999"}
    output = b"\n".join(_raw(x) for x in (lines[0], stranger, lines[1], lines[1]))
    settled = settle_job(service.extractor, requests, output, b"\xff\xfe garbage\n", "completed", 0.0)
    assert not settled.retry and len(settled.outcomes) == 6 and len(settled.attempts) == 2


# -------------------------------------------------------------------------------- the engine
def test_a_run_whose_every_line_is_poison_finishes_through_the_fallback(tmp_path: Path) -> None:
    db = _store(tmp_path)
    _session(db, _provider(faults=LineFaults(poison_every=1)))
    assert _status_counts(db) == {"extracted": 20}
    assert all(a["outcome"] != "ok" for a in _batch_rows(db)) and _sync_rows(db)


class _Flaky(EmulatedBatches):
    """An emulated provider whose ``retrieve`` raises the first ``failures`` times."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(resolve_lm(LM).engine, **kwargs)
        self.failures = failures

    def retrieve(self, batch_id: str) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("connection reset by peer")
        return super().retrieve(batch_id)


def test_a_retrieve_that_fails_a_few_times_is_polled_again(tmp_path: Path) -> None:
    db = _store(tmp_path)
    _session(db, _Flaky(3))
    assert _status_counts(db) == {"extracted": 20} and not _sync_rows(db)


def test_a_retrieve_that_always_fails_stops_the_run_resumable(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _Flaky(10 ** 6)
    results = _session(db, provider)
    assert results[-1].stopped and "connection reset" in results[-1].stopped
    assert _status_counts(db) == {"pending": 20} and [j["status"] for j in db.batch_jobs(RUN)] == ["submitted"]
    provider.failures = 0
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and provider.calls["create"] == 1
    _paid_once(db)


def test_an_unknown_batch_is_reported_and_its_documents_sent_again_once(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path)
    _killed(db, _provider(), on_submitted=_interrupt)
    [lost] = db.batch_jobs(RUN)
    restarted = _provider()  # the emulated provider kept its batches in memory: they are gone
    _killed(db, restarted, on_submitted=_interrupt)  # the documents sent again; killed once more
    assert lost["batch_id"] in capsys.readouterr().err
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["lost", "submitted"]
    assert restarted.calls["upload"] == restarted.calls["create"] == 1
    again = _provider()  # forgotten again: sent once already, so now synchronously
    results = _session(db, again)
    assert _status_counts(db) == {"extracted": 20} and again.calls["upload"] == again.calls["create"] == 0
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["lost", "lost"]
    assert sum(a["n_docs"] for a in _sync_rows(db) if a["outcome"] == "ok") == len(DOCS)
    assert sum(r.batches for r in results) >= 1


def test_a_job_whose_file_the_provider_forgot_before_its_batch_was_created_is_sent_again(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _provider()

    def crash_before_create(input_file_id: str, metadata: dict[str, str]) -> str:
        raise KeyboardInterrupt  # killed with the file uploaded and the create not sent

    provider.create = crash_before_create  # type: ignore[method-assign]
    _killed(db, provider)
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["creating"]
    restarted = _provider()  # knows neither the file nor any batch
    _session(db, restarted)
    assert _status_counts(db) == {"extracted": 20} and len(restarted.batches) == 1  # the create it refused made none
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["lost", "completed"]
    _paid_once(db)
