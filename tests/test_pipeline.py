"""The main job end to end on the emulated provider: store, resume (also after SIGKILL), bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import toolkit
from toolkit.cli import main
from toolkit.corpora import CorpusError, synthetic_documents
from toolkit.jobs import RunSettings, run

REPO = Path(__file__).resolve().parents[1]
LM = "emulated:hosted-api"


def write_jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs), encoding="utf-8")
    return path


def db_counts(db: Path, run_id: str) -> tuple[int, int, dict[str, int]]:
    with sqlite3.connect(db) as conn:
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM batchx_documents WHERE run_id = ?",
                                      (run_id,)).fetchone()
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM batchx_documents WHERE run_id = ? GROUP BY status",
                                     (run_id,)).fetchall())
    return rows, distinct, statuses


def test_extract_into_sqlite_then_resume_makes_no_calls(tmp_path: Path, ncbi_devel: Path, no_network: list,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's acceptance commands, in process."""
    db = tmp_path / "x.db"
    args = ["extract", "--corpus", str(ncbi_devel), "--lm", LM, "--db", f"sqlite:///{db}", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["summary"]
    assert first["lost"] == 0 and first["extracted"] == first["documents"] == 100 and first["calls"] > 0
    for key in ("run", "documents", "extracted", "failed", "lost", "batches", "calls", "entities", "entities_per_doc",
                "zero_entity_docs", "grounded_rate", "leaks", "tokens_in", "tokens_out", "wall_seconds",
                "docs_per_second"):
        assert key in first
    assert db_counts(db, first["run"])[:2] == (100, 100)
    assert main(args + ["--resume"]) == 0
    second = json.loads(capsys.readouterr().out)["summary"]
    assert second["run"] == first["run"] and second["calls"] == 0 and second["skipped_already_extracted"] == 100
    assert second["entities"] == first["entities"] and db_counts(db, first["run"])[:2] == (100, 100)


def test_python_api_returns_frames(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(30, seed=4))
    result = toolkit.run(str(corpus), lm=LM, store=f"sqlite:///{tmp_path / 'api.db'}", run_name="api",
                         settings=RunSettings(max_docs=5), progress=False)
    assert result.run_id == "api" and result.summary.extracted == 30 and result.summary.batches == 6
    assert result.documents.height == 30 and set(result.documents["status"]) == {"extracted"}
    assert result.attempts.height == result.summary.counts.calls
    assert result.entities.height == result.summary.counts.entities


BAD_LINES = [
    b'{"id": "ok1", "text": "Asthma and eczema in children."}\n',
    b'{"id": "ok2", "text": "Cystic fibrosis."\n',                     # 2: malformed JSON
    b'{"text": "no id here"}\n',                                         # 3: missing id
    b'{"id": "e1", "text": "   "}\n',                                    # 4: empty text
    b'{"id": "n1", "text": {"nested": 1}}\n',                            # 5: not text
    b'{"id": "u1", "text": "caf\xe9 latte"}\n',                          # 6: invalid UTF-8
    b'{"id": "ok1", "text": "Asthma and eczema in children."}\n',      # 7: exact duplicate: skipped
    b'{"id": "ok1", "text": "A different text under the same id."}\n',  # 8: duplicate id, other text
    b'[1, 2, 3]\n',                                                       # 9: not an object
    b'{"id": "big", "text": "' + b"word " * 12000 + b'"}\n',            # 10: far over the budget
    b'{"id": "ok3", "text": "Malaria in travellers."}\n',
]


def test_bad_input_is_recorded_never_crashes_never_dropped(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(b"".join(BAD_LINES))
    result = run(str(corpus), lm=LM, store=f"sqlite:///{tmp_path / 'bad.db'}", run_name="bad", progress=False)
    s = result.summary.to_json()
    assert s["lost"] == 0 and s["extracted"] == 2 and s["duplicates_skipped"] == 1 and s["oversize"] == 1
    docs = {r["doc_id"]: r for r in result.store.documents("bad")}
    failed = {k: v["reason"] for k, v in docs.items() if v["status"] == "failed"}
    assert len(failed) == 8 and s["failed"] == 8
    reasons = "\n".join(failed.values())
    for needle in (":2: malformed JSON", ":3: missing or invalid id", ":4: empty text", ":5: text is dict",
                   ":6: invalid UTF-8", "already used for a different text", ":9: a JSON list", "has 12"):
        assert needle in reasons, needle
    assert all(r.startswith("bad input: ") for r in failed.values())
    assert {"ok1", "ok3"} <= {k for k, v in docs.items() if v["status"] == "extracted"}


def test_strict_mode_stops_at_the_first_bad_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(b"".join(BAD_LINES))
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: malformed JSON"):
        run(str(corpus), lm=LM, store=f"sqlite:///{tmp_path / 's.db'}", settings=RunSettings(strict=True),
            progress=False)
    code = main(["extract", "--corpus", str(corpus), "--lm", LM, "--db", f"sqlite:///{tmp_path / 's2.db'}",
                 "--strict", "--json"])
    assert code == 2 and "bad.jsonl:2" in capsys.readouterr().err


def test_missing_corpus_and_bad_store_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--corpus", str(tmp_path / "nope.jsonl"), "--lm", LM, "--json"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["extract", "--corpus", "sample", "--lm", LM, "--db", "mysql://x", "--json"]) == 2
    assert "unknown store" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_every_document_exactly_once(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "big.jsonl", synthetic_documents(3_000, seed=9))
    db = tmp_path / "kill.db"
    cmd = [sys.executable, "-m", "toolkit", "extract", "--corpus", str(corpus), "--lm", LM, "--db", f"sqlite:///{db}",
           "--run", "killed", "--json", "--show", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                _, _, statuses = db_counts(db, "killed")
            except sqlite3.OperationalError:  # tables not created yet
                continue
            if statuses.get("extracted", 0) >= 300:
                proc.send_signal(signal.SIGKILL)
                killed_at = statuses["extracted"]
                break
    proc.wait(timeout=30)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    rows, distinct, statuses = db_counts(db, "killed")
    assert statuses.get("extracted", 0) < 3_000  # really interrupted
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)["summary"]
    rows, distinct, statuses = db_counts(db, "killed")
    assert (rows, distinct, statuses) == (3_000, 3_000, {"extracted": 3_000})
    assert summary["lost"] == 0 and summary["skipped_already_extracted"] >= killed_at
    assert summary["calls"] > 0 and summary["extracted"] == 3_000


def test_the_public_api_is_typed_keyword_only_and_light() -> None:
    """``import toolkit`` does not load DSPy; settings classes come from ``toolkit``; options are
    keyword-only (a positional LM is refused, not taken for a store)."""
    import inspect
    import subprocess

    code = "import sys, toolkit; print('dspy' in sys.modules, toolkit.RunSettings.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "RunSettings"]
    params = inspect.signature(toolkit.run).parameters
    assert [p for p, v in params.items() if v.kind is not v.KEYWORD_ONLY] == ["corpus"]
    with pytest.raises(TypeError):
        toolkit.run("sample", LM)  # type: ignore[misc]


def test_extract_batch_keeps_one_service_per_lm() -> None:
    from toolkit.jobs._service import default_service

    docs = synthetic_documents(6, seed=1)
    first = toolkit.extract_batch(docs[:3], lm=LM)
    second = toolkit.extract_batch(docs[3:], lm=LM)
    assert first.success_status and second.success_status
    assert default_service(LM) is default_service() and toolkit.get_batch_metrics().total_documents_processed == 6


def test_a_stop_event_stops_the_run_resumably_and_the_resume_does_each_document_once(tmp_path: Path) -> None:
    """What a notebook's Stop button does: set from the progress callback here (another thread in a
    notebook), the run stops with the undecided documents pending; resuming finishes them once."""
    import threading

    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(40, seed=8))
    store = f"sqlite:///{tmp_path / 'stop.db'}"
    stop = threading.Event()

    def after_ten(tally: dict) -> None:
        if tally["documents"] >= 10:
            stop.set()

    # two calls in flight: those finish after Stop, no other starts
    first = toolkit.run(str(corpus), lm=LM, store=store, run_name="s",
                        settings=RunSettings(max_docs=4, concurrency="2"), progress=after_ten, stop=stop)
    assert "stop requested" in first.summary.stop_reason and first.summary.lost == 0
    assert 10 <= first.summary.extracted < 40 and first.summary.pending == 40 - first.summary.extracted
    again = toolkit.run(str(corpus), lm=LM, store=store, run_name="s", settings=RunSettings(max_docs=4),
                        progress=False)
    assert again.summary.extracted == 40 and again.summary.skipped_already_extracted == first.summary.extracted
    assert db_counts(tmp_path / "stop.db", "s") == (40, 40, {"extracted": 40})
    assert {r["session_id"] for r in again.store.attempts("s")} and len(again.attempts) == (
        first.summary.counts.calls + again.summary.counts.calls)  # every call of both sessions recorded
