"""Scale-out on Ray (a local Ray started by the tests with num_cpus=2): the same entities as the local
engine, one global rate limit across workers, a killed worker's chunk redone, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

import toolkit
from toolkit.corpora import synthetic_documents
from toolkit.metrics import max_in_window
from toolkit.pipeline import RunSettings

ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
pytestmark = pytest.mark.slow
LM = "emulated:hosted-api@100"  # the hosted-api profile, 100 times faster, in real time


@pytest.fixture(scope="module")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "c.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(2000, seed=11)))
    return path


def entities_by_document(db: Path, run_id: str) -> dict[str, list[tuple[str, str]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT doc_id, mention, entity_type FROM batchx_entities WHERE run_id = ? "
                            "ORDER BY doc_id, seq", (run_id,)).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for doc_id, mention, kind in rows:
        out.setdefault(doc_id, []).append((mention, kind))
    return out


def test_two_workers_find_what_the_local_engine_finds_under_one_global_rate_limit(local_ray, corpus: Path,
                                                                                 tmp_path: Path) -> None:
    from toolkit.lm.emulated import load_profile

    runs = {}
    for engine in ("local", "ray"):
        db = tmp_path / f"{engine}.db"
        runs[engine] = toolkit.run(corpus, lm=LM, store=f"sqlite:///{db}", run_name=engine, engine=engine, workers=2,
                                   settings=RunSettings(max_docs=10), progress=False)
        summary = runs[engine].summary
        assert summary["lost"] == 0 and summary["extracted"] == summary["documents"] == 2000, summary
    local, remote = (entities_by_document(tmp_path / f"{e}.db", e) for e in ("local", "ray"))
    assert remote == local and len(remote) > 1500
    attempts = runs["ray"].attempts
    assert attempts["n_docs"].sum() == attempts.filter(attempts["outcome"] == "ok")["n_docs"].sum() + attempts.filter(
        attempts["outcome"] != "ok")["n_docs"].sum()
    profile = load_profile(LM.partition(":")[2])
    times, tokens = attempts["at"].to_list(), attempts["budget_tokens"].to_list()
    assert max_in_window(times, [1] * len(times), profile.window) <= profile.requests_per_minute
    assert max_in_window(times, tokens, profile.window) <= profile.tokens_per_minute
    with sqlite3.connect(tmp_path / "ray.db") as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM batchx_documents").fetchone() == (2000, 2000)


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_worker_s_chunk_is_redone_and_every_document_is_stored_once(local_ray, corpus: Path,
                                                                             tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    done: dict[str, object] = {}
    killed: list[int] = []

    def work() -> None:
        done["result"] = toolkit.run(corpus, lm=LM, store=f"sqlite:///{db}", run_name="kill", engine="ray", workers=2,
                                     settings=RunSettings(max_docs=10), progress=False)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    while not killed and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
        try:
            with sqlite3.connect(db) as conn:
                extracted = conn.execute("SELECT COUNT(*) FROM batchx_documents WHERE status = 'extracted'").fetchone()[0]
        except sqlite3.OperationalError:
            continue
        pids = _worker_pids()
        if extracted >= 300 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    thread.join(timeout=300)
    assert killed, "no worker was killed: the run ended first"
    summary = done["result"].summary  # type: ignore[attr-defined]
    assert summary["lost"] == 0 and summary["extracted"] == 2000
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM batchx_documents").fetchone() == (2000, 2000)
        assert conn.execute("SELECT COUNT(*) FROM batchx_documents WHERE status != 'extracted'").fetchone()[0] == 0


def test_virtual_time_cannot_be_shared_across_workers(local_ray, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emulated:hosted-api@100"):
        toolkit.run(corpus, lm="emulated:hosted-api", store=f"sqlite:///{tmp_path / 'v.db'}", engine="ray",
                    progress=False)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, corpus: Path,
                                                       tmp_path: Path) -> None:
    import toolkit.scaleout

    monkeypatch.setattr(toolkit.scaleout, "ray", None)
    with pytest.raises(ValueError, match=r"pip install -e '\.\[ray\]'"):
        toolkit.run(corpus, lm=LM, store=f"sqlite:///{tmp_path / 'n.db'}", engine="ray", progress=False)
