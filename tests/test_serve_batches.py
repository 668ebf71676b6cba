"""The emulator's batch routes over HTTP (toolkit.testing.serve): OpenAI's ``GET /v1/batches`` (its list
object, newest first, ``after`` and ``limit``), read by LiteLLM's ``list_batches`` when a run resumed
in the crash window after a create adopts its batch; Anthropic's Message Batches routes (create,
retrieve, results, list) and their error bodies; a store without them answers 404."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from test_batchapi_resume import LM, RUN, _killed, _paid_once, _session, _status_counts, _store

from toolkit.jobs.batchapi import LiteLLMBatches
from toolkit.jobs.batchapi._emulated import EmulatedBatches, EmulatedMessageBatches
from toolkit.lm import resolve_lm
from toolkit.testing.serve import EmulatorServer, ServeSettings

PROFILE = "hosted-api@100"


def _serve(batches: Any) -> EmulatorServer:
    return EmulatorServer(ServeSettings(profile=PROFILE), batches).start()


@pytest.fixture
def server():  # noqa: ANN201 - a server over both formats; batches done 0.3 s after creation
    started = _serve(EmulatedMessageBatches(resolve_lm(LM).engine, turnaround=0.3, wall_clock=True))
    yield started
    started.stop()


def _batch(url: str, n: int) -> str:
    line = {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}}
    file = httpx.post(f"{url}/files", files={"file": ("in.jsonl", json.dumps(line).encode())},
                      data={"purpose": "batch"}).json()
    return httpx.post(f"{url}/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h", "metadata": {"n": str(n)}}).json()["id"]


# ------------------------------------------------------------------------------------- OpenAI
def test_the_batch_list_is_openais_list_object_newest_first_paged_by_after_and_limit(server: EmulatorServer) -> None:
    made = [_batch(server.url, n) for n in range(23)]
    newest = made[::-1]
    page = httpx.get(f"{server.url}/batches").json()
    assert page["object"] == "list" and [b["id"] for b in page["data"]] == newest[:20]  # limit 20 by default
    assert page["has_more"] and (page["first_id"], page["last_id"]) == (newest[0], newest[19])
    assert page["data"][0]["metadata"] == {"n": "22"} and page["data"][0]["object"] == "batch"
    rest = httpx.get(f"{server.url}/batches", params={"after": page["last_id"], "limit": 5}).json()
    assert [b["id"] for b in rest["data"]] == newest[20:] and not rest["has_more"]
    two = httpx.get(f"{server.url}/batches", params={"limit": 2}).json()
    assert [b["id"] for b in two["data"]] == newest[:2] and two["has_more"]
    for bad in ("0", "101", "x"):
        refused = httpx.get(f"{server.url}/batches", params={"limit": bad})
        assert refused.status_code == 400 and "limit" in refused.json()["error"]["message"]
    assert httpx.get(f"{server.url}/batches/batch_nope").json()["error"]["type"] == "invalid_request_error"


def test_a_resume_in_the_crash_window_after_a_create_adopts_the_batch_over_http(tmp_path, server) -> None:  # noqa: ANN001
    db, provider = _store(tmp_path), LiteLLMBatches(server.url)
    create = provider.create

    def accepted_then_killed(input_file_id: str, metadata: dict[str, str]) -> str:
        create(input_file_id, metadata)
        raise KeyboardInterrupt  # the provider has the batch; the store never learns its id

    provider.create = accepted_then_killed  # type: ignore[method-assign]
    _killed(db, provider, poll_seconds=0.1)
    [job] = db.batch_jobs(RUN)
    assert job["batch_id"] is None and len(server.batches.batches) == 1
    _session(db, LiteLLMBatches(server.url), poll_seconds=0.1)  # a new process: LiteLLM's list_batches finds it
    assert _status_counts(db) == {"extracted": 20}
    assert server.batches.calls["create"] == 1 and server.batches.calls["list"] >= 1
    assert db.batch_jobs(RUN)[0]["batch_id"] == next(iter(server.batches.batches))
    _paid_once(db)


# ---------------------------------------------------------------------------------- Anthropic
def _request(cid: str) -> dict[str, Any]:
    return {"custom_id": cid, "params": {"model": "claude", "max_tokens": 50,
                                         "messages": [{"role": "user", "content": "hi"}]}}


def _anthropic_error(reply: httpx.Response, status: int, kind: str) -> str:
    body = reply.json()
    assert reply.status_code == status and body["type"] == "error" and body["error"]["type"] == kind
    return body["error"]["message"]


def test_message_batches_are_created_retrieved_listed_and_their_results_read(server: EmulatorServer) -> None:
    url = f"{server.url}/messages/batches"
    made = httpx.post(url, json={"requests": [_request("a"), _request("b")]}).json()
    assert made["type"] == "message_batch" and made["processing_status"] == "in_progress"
    assert "not ended" in _anthropic_error(httpx.get(f"{url}/{made['id']}/results"), 400, "invalid_request_error")
    server.batches.sleep(0.35)
    ended = httpx.get(f"{url}/{made['id']}").json()
    assert ended["processing_status"] == "ended" and ended["request_counts"]["succeeded"] == 2
    results = httpx.get(f"{url}/{made['id']}/results")
    lines = [json.loads(x) for x in results.content.splitlines()]
    assert [x["custom_id"] for x in lines] == ["a", "b"] and lines[0]["result"]["type"] == "succeeded"
    others = [httpx.post(url, json={"requests": [_request("c")]}).json()["id"] for _ in range(2)]
    page = httpx.get(url, params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == others[::-1] and page["has_more"]
    rest = httpx.get(url, params={"after_id": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [made["id"]] and not rest["has_more"]
    assert _batch(server.url, 0) not in [b["id"] for b in httpx.get(url).json()["data"]]  # OpenAI's are not listed


@pytest.mark.parametrize("body", [{}, {"requests": []}, {"requests": [{"custom_id": "a"}]},
                                  {"requests": [_request("a b")]}, {"requests": [_request("a"), _request("a")]},
                                  {"requests": [_request("x" * 65)]}, [1]])
def test_a_create_anthropic_would_refuse_is_a_400_in_its_words(server: EmulatorServer, body: Any) -> None:
    _anthropic_error(httpx.post(f"{server.url}/messages/batches", json=body), 400, "invalid_request_error")
    assert server.batches.calls["create"] == 0


def test_an_unknown_message_batch_is_anthropics_404(server: EmulatorServer) -> None:
    url = f"{server.url}/messages/batches"
    assert "msgbatch_nope" in _anthropic_error(httpx.get(f"{url}/msgbatch_nope"), 404, "not_found_error")
    _anthropic_error(httpx.get(f"{url}/msgbatch_nope/results"), 404, "not_found_error")


def test_a_store_without_message_batches_answers_404_there_and_serves_openais() -> None:
    with _serve(EmulatedBatches(resolve_lm(LM).engine, turnaround=0.1, wall_clock=True)) as only_openai:
        refused = httpx.post(f"{only_openai.url}/messages/batches", json={"requests": [_request("a")]})
        assert "no message batches" in _anthropic_error(refused, 404, "not_found_error")
        assert httpx.get(f"{only_openai.url}/batches").json()["object"] == "list"
    with EmulatorServer(ServeSettings(profile=PROFILE)) as bare:
        _anthropic_error(httpx.get(f"{bare.url}/messages/batches"), 404, "not_found_error")
        assert httpx.get(f"{bare.url}/batches").status_code == 404
