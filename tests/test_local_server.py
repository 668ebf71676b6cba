"""The main job against an OpenAI-compatible server on 127.0.0.1 with no API key in the environment:
what it sends (a recording stub, fast), and a run against ``python -m llama_cpp.server`` on the cached
default model, restarted mid-run (``-m local_model``: needs llama-cpp-python's ``server`` extra,
installed by ``bash scripts/setup --dev``, and the default model's weights).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit.extraction import ExtractionSettings
from toolkit.lm import _weights as weights

ALIAS = "batchx-local"  # the server's name for its model (``--lm openai/ALIAS``)
DOCUMENTS = {
    "s1": "Patients with cystic fibrosis often develop chronic lung infections.",
    "s2": "Mutations in BRCA1 raise the risk of breast cancer and ovarian cancer.",
    "s3": "Children with asthma were treated with inhaled corticosteroids.",
    "s4": "Type 2 diabetes is a risk factor for chronic kidney disease.",
}


class Server:
    """``python -m llama_cpp.server`` at ``127.0.0.1:port``; restartable on the same port. Every
    process it starts is killed by :meth:`stop`."""

    def __init__(self, model: Path, port: int, log: Path) -> None:
        self.model, self.port, self.log = model, port, log
        self.url = f"http://127.0.0.1:{port}/v1"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
                 "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096",
                 "--n_threads", "1", "--n_threads_batch", "1"],
                stdout=log, stderr=subprocess.STDOUT))

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[-1].poll() is not None:
                raise RuntimeError(f"the server exited with {self.processes[-1].returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the server did not answer within {timeout:.0f} s: see {self.log}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is not installed")
    model = weights.cached_path()
    if model is None:
        message = f"default model not cached: run `python -m toolkit models fetch` ({weights.model_dir()})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started = Server(model, _free_port(), tmp_path / "server.log")
    try:
        started.start()
        started.wait_ready()
        yield started
    finally:
        started.stop()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each chat request (headers and body) and answers with an empty extraction."""

    requests: list[tuple[dict[str, str], dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((dict(self.headers), body))
        ids = body["response_format"]["schema"]["properties"]["results"]["items"]["properties"]["id"]["enum"]
        content = json.dumps({"results": [{"id": i, "entities": []} for i in ids]})
        reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("key", [None, "sk-from-the-environment"], ids=["no-key", "key"])
def test_an_openai_compatible_server_gets_a_key_the_schema_as_json_object_and_max_tokens(
        key: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What DSPy alone would not send to ``llama_cpp.server``: a key when the environment has none
    (it would stop with "no API key found"; a key the environment has is sent as is), the schema in
    the ``json_object`` form the server accepts (DSPy drops it for an unknown model, and spells it
    ``json_schema``, which the server refuses) and ``max_tokens`` (the server ignores
    ``max_completion_tokens``)."""
    from toolkit.core import Document
    from toolkit.jobs import ExtractionService
    from toolkit.lm import PLACEHOLDER_KEY, resolve_lm

    if key is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    _Recorder.requests.clear()
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        resolved = resolve_lm(f"openai/{ALIAS}", api_base=f"http://127.0.0.1:{stub.server_port}/v1")
        settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False)
        service = ExtractionService(resolved, settings)
        result = service.extract_batch([Document("d1", DOCUMENTS["s1"])])
    finally:
        stub.shutdown()
        stub.server_close()
    assert result.success_status and result.per_document_entities == {"d1": []}
    attempt, = service.metrics.attempts
    assert attempt.usage == (10, 5)  # the server's usage, counted once
    (headers, body), = _Recorder.requests
    assert headers["Authorization"] == f"Bearer {key or PLACEHOLDER_KEY}" and body["model"] == ALIAS
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["properties"]["results"]["maxItems"] == 1
    assert body["max_tokens"] == settings.max_tokens(1) and "max_completion_tokens" not in body


@pytest.mark.local_model
@pytest.mark.slow
def test_extract_through_a_keyless_local_server_that_restarts_mid_run(server: Server, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The main job with ``lm="openai/NAME", api_base=URL`` and OPENAI_API_KEY unset, one document
    per call, against the real server, which answers every request it gets (none refused). The
    server is killed once the first document is stored and started again at once (one thread: the
    machine may be busy): the next calls fail to connect and are retried until it is back, and
    every document ends extracted, none lost."""
    from toolkit.jobs import RunSettings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCUMENTS.items()))
    restarts: list[int] = []  # documents stored when the server was restarted

    def restart_after_the_first(tally: dict) -> None:
        if tally["documents"] == 1 and not restarts:
            server.stop()
            server.start()  # not awaited: the run meets the outage and the model's loading time
            restarts.append(tally["documents"])

    settings = RunSettings(max_docs=1, concurrency="1", api_base=server.url,
                           extraction=ExtractionSettings(entity_types=("DISEASE",), relationships=False))
    result = toolkit.run(str(corpus), lm=f"openai/{ALIAS}", settings=settings,
                         store=f"sqlite:///{tmp_path / 'run.db'}", progress=restart_after_the_first)
    summary = result.summary
    assert restarts == [1] and len(server.processes) == 2
    assert summary.lost == 0 and summary.extracted == len(DOCUMENTS), summary
    statuses = dict(zip(result.documents["doc_id"], result.documents["status"]))
    assert statuses == dict.fromkeys(DOCUMENTS, "extracted")
    attempts = result.attempts
    assert (attempts["error_class"] == "connection").any(), attempts  # the outage was met, and retried
    answered = re.findall(r'"POST /v1/chat/completions HTTP/1.1" (\d+)', server.log.read_text(errors="replace"))
    assert len(answered) == len(DOCUMENTS) and set(answered) == {"200"}  # no request refused (json_schema: 4xx)


# ------------------------------------------------------------------------------ llama-server
@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[Any]:
    """llama.cpp's ``llama-server`` (built by ``bash scripts/build-llama-server``) with 4 slots on
    qwen2.5-0.5b, one thread (a busy machine's cores are not all free), started by the repository's
    helper and stopped after the test."""
    from toolkit.lm import WeightsError
    from toolkit.lm.llamaserver import LlamaServer, binary

    try:
        binary()
    except WeightsError as exc:
        pytest.skip(str(exc))
    if weights.cached_path("qwen2.5-0.5b") is None:
        pytest.skip("qwen2.5-0.5b is not cached: run `python -m toolkit models fetch qwen2.5-0.5b`")
    server = LlamaServer("qwen2.5-0.5b", parallel=4, threads=1, log=tmp_path / "llama-server.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.local_model
@pytest.mark.slow
def test_bench_reaches_llama_server_with_slots(llama_server: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's client path (``--lm openai/NAME --api-base URL``, no key in the environment)
    against ``llama-server --parallel 4``: one document per call (A), packed (B), packed and
    concurrent (C) and one per call concurrent (D) on two documents, every request answered by the
    server with its slots, none lost."""
    from toolkit.measure import BENCH_PLAN, bench

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in list(DOCUMENTS.items())[:2]))
    result = bench(f"openai/{llama_server.alias}", str(corpus), 2, max_docs=2, types=["DISEASE"], settle=0,
                   api_base=llama_server.url, plan=[c for c in BENCH_PLAN if c.mode == "sync"])
    configs = {c.config: c.to_json() for c in result.configs}
    assert {"A", "B", "C", "D"} <= set(configs) and result.lost == 0, result
    assert configs["A"]["calls"] >= 2 and configs["B"]["calls"] >= 1
    log = llama_server.log.read_text(errors="replace")
    assert "n_slots = 4" in log and "kv_unified = 'true'" in log
    assert len(re.findall(r"slot launch_slot_: id +\d", log)) >= sum(c["calls"] for c in configs.values())
    assert result.speedups["speedup_c_vs_d"] is not None
