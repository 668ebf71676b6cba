"""Scale-out on Ray (a local Ray started by the tests with num_cpus=2): the same entities as the local
runner under one global rate limit; workers killed every few seconds, a worker killed mid-call at
concurrency 1, a chunk that kills every worker it meets, a cluster where no worker can start and a
stop: nothing lost, nothing written twice, no answer paid twice, every paid call recorded, no hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import toolkit
from toolkit.core import Document
from toolkit.corpora import synthetic_documents
from toolkit.execution import max_in_window
from toolkit.jobs import RunSettings

ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
pytestmark = pytest.mark.slow
LM = "emulated:hosted-api@100"  # the hosted-api profile, 100 times faster, in real time
HTTP_LM = "openai/gpt-4o-mini"  # through LiteLLM to the test's own server (ChatServer)


@pytest.fixture(scope="module")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_corpus(path: Path, documents: list[Document]) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in documents))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ray") / "c.jsonl", synthetic_documents(2000, seed=11))


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::Worker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _kill_workers() -> None:
    for pid in _worker_pids():
        os.kill(pid, signal.SIGKILL)


class ChatServer(ThreadingHTTPServer):
    """OpenAI's chat completions on 127.0.0.1, answered by the emulated provider's extractor after
    ``delay`` seconds, with ``headers``; every reply is counted (``answered``: when each request came
    and was answered). A request with ``poison`` in its prompt gets no answer: the Ray workers are killed
    (SIGKILL, half a second later), ``kills`` times at most."""

    daemon_threads = True

    def __init__(self, delay: float = 0.0, poison: str | None = None, kills: int = 0,
                 headers: dict[str, str] | None = None) -> None:
        from toolkit.lm import EmulatedEngine, load_profile

        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.engine = EmulatedEngine(load_profile("hosted-api"))
        self.delay, self.poison, self.kills_left, self.headers = delay, poison, kills, headers or {}
        self.lock = threading.Lock()
        self.received: list[float] = []
        self.answered: list[tuple[float, float]] = []
        self.kills = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def poisoned(self, body: dict) -> bool:
        with self.lock:
            hit = self.poison is not None and self.kills_left > 0 and self.poison in json.dumps(body["messages"])
            self.kills_left -= hit
            return hit


class _ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from toolkit.jobs.batchapi._emulated import answer

        came = time.time()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.received.append(came)
        if self.server.poisoned(body):
            time.sleep(0.5)  # the calls it answered before have reached the driver
            _kill_workers()
            self.server.kills += 1
            return
        time.sleep(self.server.delay)
        data = json.dumps(answer(self.server.engine, body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.server.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        with self.server.lock:
            self.server.answered.append((came, time.time()))


@pytest.fixture
def chat_server():
    servers: list[ChatServer] = []

    def start(**kwargs) -> ChatServer:  # noqa: ANN003
        servers.append(ChatServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _store_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM batchx_documents").fetchone()


def entities_by_document(db: Path, run_id: str) -> dict[str, list[tuple[str, str]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT doc_id, mention, entity_type FROM batchx_entities WHERE run_id = ? "
                            "ORDER BY doc_id, seq", (run_id,)).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for doc_id, mention, kind in rows:
        out.setdefault(doc_id, []).append((mention, kind))
    return out


def test_two_workers_find_what_the_local_runner_finds_under_one_global_rate_limit(local_ray, corpus: Path,
                                                                                 tmp_path: Path) -> None:
    from toolkit.lm import load_profile

    runs = {}
    for runner in ("local", "ray"):
        db = tmp_path / f"{runner}.db"
        runs[runner] = toolkit.run(corpus, lm=LM, store=f"sqlite:///{db}", run_name=runner, progress=False,
                                   settings=RunSettings(max_docs=10, runner=runner, workers=2))
        summary = runs[runner].summary.to_json()
        assert summary["lost"] == 0 and summary["extracted"] == summary["documents"] == 2000, summary
    local, remote = (entities_by_document(tmp_path / f"{e}.db", e) for e in ("local", "ray"))
    assert remote == local and len(remote) > 1500
    attempts = runs["ray"].attempts
    profile = load_profile(LM.partition(":")[2])
    times, tokens = attempts["at"].to_list(), attempts["budget_tokens"].to_list()
    assert max_in_window(times, [1] * len(times), profile.window) <= profile.requests_per_minute
    assert max_in_window(times, tokens, profile.window) <= profile.tokens_per_minute
    assert _store_rows(tmp_path / "ray.db") == (2000, 2000)


def test_workers_killed_every_few_seconds_lose_nothing_and_no_answer_is_paid_twice(local_ray, tmp_path: Path) -> None:
    """kill_workers_every beside a run: every document once in the store, none failed or lost, and
    the recorded calls answered each document once (what a dead worker had decided was kept)."""
    from toolkit.jobs.scaleout import kill_workers_every

    corpus = write_corpus(tmp_path / "c.jsonl", synthetic_documents(1000, seed=12))
    stop, killed = threading.Event(), []
    chaos = threading.Thread(target=lambda: killed.extend(kill_workers_every(3.0, stop, run_id="chaos")))
    chaos.start()
    try:
        result = toolkit.run(corpus, lm=LM, store=f"sqlite:///{tmp_path / 'k.db'}", run_name="chaos",
                             settings=RunSettings(max_docs=10, runner="ray", workers=2), progress=False)
    finally:
        stop.set()
        chaos.join()
    summary = result.summary.to_json()
    assert len(killed) >= 2 and summary["workers_replaced"] >= 1, (killed, summary)
    assert (summary["extracted"], summary["failed"], summary["lost"]) == (1000, 0, 0), summary
    assert _store_rows(tmp_path / "k.db") == (1000, 1000)
    assert result.attempts["documents_ok"].sum() == 1000  # each document answered by one recorded call


def test_a_chunk_that_kills_every_worker_fails_with_the_reason_and_no_slot_leaks(local_ray, chat_server,
                                                                                 tmp_path: Path) -> None:
    """Concurrency 1, one worker, a document whose call kills the worker mid-call (holding the only
    slot of the global gate, its other calls queued for it): the slot comes back each time, what
    is left of the chunk is sent again, halved each time its workers died three times in a row with
    nothing of it decided, until the document that kills them is alone: it fails with the reason,
    every other document is extracted; the run finishes, nothing lost, every call the server
    answered is recorded."""
    server = chat_server(poison="POISON-PILL", kills=60)
    documents = synthetic_documents(80, seed=5)
    documents[20] = Document(documents[20].id, documents[20].text + " POISON-PILL")
    corpus = write_corpus(tmp_path / "p.jsonl", documents)
    done: dict[str, object] = {}

    def work() -> None:
        done["result"] = toolkit.run(corpus, lm=HTTP_LM, store=f"sqlite:///{tmp_path / 'p.db'}",
                                     run_name="poison", progress=False,
                                     settings=RunSettings(max_docs=5, concurrency="1", runner="ray", workers=1,
                                                          api_base=server.url))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), f"the run hangs after {server.kills} kills"
    result = done["result"]
    summary = result.summary.to_json()  # type: ignore[attr-defined]
    assert 3 <= server.kills <= 60 and summary["lost"] == 0 and summary["extracted"] + summary["failed"] == 80
    rows = {r["doc_id"]: r for r in result.documents.to_dicts()}  # type: ignore[attr-defined]
    failed = {i for i, r in rows.items() if r["status"] == "failed"}
    assert failed == {documents[20].id}  # the innocent documents of its chunk are extracted
    assert rows[documents[20].id]["reason"].startswith("worker died 3 times in a row on this document alone: ")
    assert _store_rows(tmp_path / "p.db") == (80, 80)
    attempts = result.attempts  # type: ignore[attr-defined]
    assert attempts.filter(attempts["outcome"] == "ok").height == len(server.answered)


def _drive(runner, decided, record, documents: list[Document], packing) -> list:  # noqa: ANN001
    """Chunks of 50 of ``documents`` through ``runner`` as the pipeline gives them; its results."""
    from toolkit.jobs._runners import Chunk
    from toolkit.packing import get_counter

    counter, results = get_counter(packing.model), []
    try:
        for start in range(0, len(documents), 50):
            part = documents[start:start + 50]
            results += runner.submit(Chunk(part, [counter.count(d.text) for d in part], packing), decided, record)
            if any(r.stopped for r in results):
                return results
        return results + list(runner.drain(decided, record))
    finally:
        runner.close()


def test_a_stop_sends_nothing_more_and_records_every_call_the_server_answered(local_ray, chat_server) -> None:
    """RayRunner(stop=...): once set, no chunk is sent and no call starts; calls in flight finish,
    are recorded and their answers kept; the runner ends with the stop's reason. (The limits the
    provider's replies said are learned by the global pace.)"""
    from toolkit.execution import STOP_REQUESTED
    from toolkit.jobs import ExtractionService
    from toolkit.jobs.scaleout import RayRunner

    server = chat_server(delay=0.3, headers={"x-ratelimit-limit-requests": "5000",
                                             "x-ratelimit-limit-tokens": "4000000"})
    service = ExtractionService(HTTP_LM, api_base=server.url)
    stop, stopped_at = threading.Event(), []
    runner = RayRunner(service, workers=2, stop=stop)
    kept, recorded = [], []

    def decided(outcome) -> None:  # noqa: ANN001
        kept.append(outcome)
        if len(kept) >= 20 and not stop.is_set():
            stopped_at.append(time.time())
            stop.set()

    results = _drive(runner, decided, recorded.extend, synthetic_documents(400, seed=3),
                     service.packing_settings(8192, max_docs=5))
    assert results[-1].stopped == STOP_REQUESTED and stopped_at
    time.sleep(0.5)
    assert max(server.received) < stopped_at[0] + 0.5, "a call started after the stop"
    assert len(recorded) == len(server.answered) == len(server.received) < 80
    answers = sum(a.counts.documents_ok for a in recorded)
    assert answers == len(kept) == sum(o.status == "extracted" for o in kept) < 400  # every paid answer kept
    limits = runner.summary()["rate_limits"]
    assert (limits["rpm"], limits["tpm"], limits["source"]) == (5000, 4000000, "learned"), limits


def test_a_worker_waits_for_a_slot_no_longer_than_its_patience(local_ray, chat_server) -> None:
    """The only slot (the first call of a run goes alone) held longer than the runner's patience:
    the waiting calls give up, the run stops saying so, in bounded time."""
    from toolkit.jobs import ExtractionService
    from toolkit.jobs.scaleout import RayRunner

    server = chat_server(delay=3.0)
    service = ExtractionService(HTTP_LM, api_base=server.url)
    runner = RayRunner(service, workers=1, patience=1.0)
    start = time.monotonic()
    results = _drive(runner, lambda outcome: None, lambda records: None, synthetic_documents(50, seed=4),
                     service.packing_settings(8192, max_docs=5))
    assert results[-1].stopped.startswith("no slot of the global concurrency gate came free in 1 s")
    assert time.monotonic() - start < 30 and len(server.received) == 1


def test_when_no_worker_can_start_the_run_says_why_in_one_line(local_ray, corpus: Path, tmp_path: Path) -> None:
    """A worker's start fails (the profile, like a model file, is missing on the cluster): before
    the run, the runner refuses in one line; during a run (workers killed once the file is gone),
    the run stops with that line, nothing lost."""
    from toolkit.jobs import ExtractionService
    from toolkit.jobs.scaleout import RayRunner
    from toolkit.lm._profiles import PROFILE_DIR

    profile = tmp_path / "profile.json"
    shutil.copy(PROFILE_DIR / "hosted-api.json", profile)
    service = ExtractionService(f"emulated:{profile}@100")
    profile.unlink()
    with pytest.raises(ValueError, match=r"^no Ray worker can start: ValueError: unknown emulated profile [^\n]*$"):
        RayRunner(service, workers=2)
    shutil.copy(PROFILE_DIR / "hosted-api.json", profile)

    def break_the_cluster(tally: dict) -> None:
        if tally["documents"] == 100 and profile.exists():
            profile.unlink()
            _kill_workers()

    result = toolkit.run(corpus, lm=f"emulated:{profile}@100", store=f"sqlite:///{tmp_path / 'n.db'}",
                         settings=RunSettings(max_docs=10, runner="ray"), progress=break_the_cluster, limit=600)
    summary = result.summary.to_json()
    assert summary["stop_reason"].startswith("no Ray worker can start: ValueError: unknown emulated profile")
    assert summary["lost"] == summary["failed"] == 0 and summary["extracted"] >= 100
    assert summary["extracted"] + summary["pending"] == summary["documents"] < 600


def test_when_the_global_pace_dies_the_run_stops_in_one_line(local_ray, corpus: Path, tmp_path: Path) -> None:
    """The actor holding the global pace is killed mid-run: no call goes without it; the run stops
    with one line, what was extracted kept, nothing lost."""

    def kill_the_pace(tally: dict) -> None:
        if tally["documents"] == 100:
            name, = (n for n in ray.util.list_named_actors() if n.endswith("-pacing"))
            ray.kill(ray.get_actor(name))

    result = toolkit.run(corpus, lm=LM, store=f"sqlite:///{tmp_path / 'pace.db'}", limit=600,
                         settings=RunSettings(max_docs=10, runner="ray"), progress=kill_the_pace)
    summary = result.summary.to_json()
    assert summary["stop_reason"].startswith("the global pace (a Ray actor) stopped answering: "), summary
    assert "\n" not in summary["stop_reason"] and summary["lost"] == summary["failed"] == 0
    assert summary["extracted"] >= 100 and summary["extracted"] + summary["pending"] == summary["documents"]


def test_virtual_time_cannot_be_shared_across_workers(local_ray, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emulated:hosted-api@100"):
        toolkit.run(corpus, lm="emulated:hosted-api", store=f"sqlite:///{tmp_path / 'v.db'}",
                    settings=RunSettings(runner="ray"), progress=False)


def test_without_ray_the_runner_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, corpus: Path,
                                                       tmp_path: Path) -> None:
    import toolkit.jobs.scaleout._runner

    monkeypatch.setattr(toolkit.jobs.scaleout._runner, "ray", None)
    with pytest.raises(ValueError, match=r"pip install -e '\.\[ray\]'"):
        toolkit.run(corpus, lm=LM, store=f"sqlite:///{tmp_path / 'n.db'}", settings=RunSettings(runner="ray"),
                    progress=False)
