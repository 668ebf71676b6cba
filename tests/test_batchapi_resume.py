"""The batch-API mode keeps its promises across Stop, kills and resumes (issue 24, items 1, 4, 6, 7):
after Stop nothing is uploaded, created or called; a resumed run neither pays nor records a batch
line twice; a job's paid answers are kept until every one of its documents is decided; a batch the
provider accepted just before a crash is adopted, not created again.

Each test runs the runner as the main job does (documents marked pending, every outcome saved
unless Stop is set, every call's record saved) against a real SQLite store and the in-process
emulated provider; a "session" is one process's run, a kill an exception that ends it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from toolkit.core import Document
from toolkit.corpora import synthetic_documents
from toolkit.jobs import ExtractionService, RunSettings
from toolkit.jobs._runners import Chunk, ChunkResult
from toolkit.jobs.batchapi import BatchApiRunner, BatchApiSettings, BatchLimits
from toolkit.jobs.batchapi._emulated import EmulatedBatches, LineFaults
from toolkit.lm import resolve_lm
from toolkit.packing import get_counter
from toolkit.store import open_store

LM = "emulated:hosted-api"
RUN = "r"
DOCS = synthetic_documents(20)


class Killed(BaseException):
    """The process killed where a KeyboardInterrupt would be raised inside an asyncio task (that
    one upsets CPython 3.11's recursion counter, and a later ``ast.parse`` in the process fails)."""


def _store(tmp_path: Path) -> Any:
    db = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    db.start_run(RUN, LM, "m", {})
    return db


def _provider(**kwargs: Any) -> EmulatedBatches:
    return EmulatedBatches(resolve_lm(LM).engine, **kwargs)


def _session(db: Any, provider: Any, docs: Sequence[Document] = DOCS, *, stop: threading.Event | None = None,
             service: ExtractionService | None = None, after_outcome: Callable[[Any], None] | None = None,
             **settings: Any) -> list[ChunkResult]:
    """One process's run: the documents not yet final, in one chunk, submitted then drained."""
    service = service or ExtractionService(LM)
    settings.setdefault("poll_seconds", 60)
    runner = BatchApiRunner(service, db, RUN, provider, BatchApiSettings(**settings), progress=False, stop=stop)
    statuses = db.statuses(RUN)
    todo = [d for d in docs if statuses.get(d.id) not in ("extracted", "failed")]
    packing = service.packing_settings(max_docs=5)
    counts = [get_counter(packing.model).count(d.text) for d in todo]
    db.mark_pending(RUN, [(d.id, n, None, None) for d, n in zip(todo, counts)])

    def decided(outcome: Any) -> None:  # as the main job's sink: every outcome handed on is kept
        db.save_documents(RUN, [outcome])
        if after_outcome is not None:
            after_outcome(outcome)

    def record(attempts: Sequence[Any]) -> None:
        db.save_attempts(RUN, attempts)

    return [*runner.submit(Chunk(todo, counts, packing), decided, record), *runner.drain(decided, record)]


def _killed(*args: Any, **kwargs: Any) -> None:
    with pytest.raises((KeyboardInterrupt, Killed)):
        _session(*args, **kwargs)


def _batch_rows(db: Any) -> list[dict[str, Any]]:
    return [a for a in db.attempts(RUN) if a["batch_id"].startswith("batch-api:")]


def _sync_rows(db: Any) -> list[dict[str, Any]]:
    return [a for a in db.attempts(RUN) if not a["batch_id"].startswith("batch-api:")]


def _status_counts(db: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in db.statuses(RUN).values():
        out[status] = out.get(status, 0) + 1
    return out


def _paid_once(db: Any, docs: int = len(DOCS)) -> None:
    """Each request's line recorded at most once, and at most one answered line per document."""
    ok = [a for a in _batch_rows(db) if a["outcome"] == "ok"]
    assert len({a["batch_id"] for a in _batch_rows(db)}) == len(_batch_rows(db))
    assert sum(a["n_docs"] for a in ok) <= docs


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------- Stop
def test_stop_before_submission_uploads_and_creates_nothing(tmp_path: Path) -> None:
    db, provider, stop = _store(tmp_path), _provider(), threading.Event()
    stop.set()
    results = _session(db, provider, stop=stop)
    assert provider.calls["upload"] == provider.calls["create"] == 0 and db.batch_jobs(RUN) == []
    assert results and results[-1].stopped and "stop" in results[-1].stopped
    assert _status_counts(db) == {"pending": 20}


def test_stop_after_the_first_batch_sends_no_other_and_polls_none(tmp_path: Path) -> None:
    db, provider, stop = _store(tmp_path), _provider(), threading.Event()
    results = _session(db, provider, stop=stop, limits=BatchLimits(max_requests=1),
                       on_submitted=lambda job, batch: stop.set())
    assert provider.calls["upload"] == provider.calls["create"] == 1 and provider.calls["retrieve"] == 0
    assert results[-1].stopped and _status_counts(db) == {"pending": 20} and _batch_rows(db) == []
    _session(db, provider, limits=BatchLimits(max_requests=1))  # resumed: the first batch polled, the rest sent
    assert _status_counts(db) == {"extracted": 20} and provider.calls["upload"] == provider.calls["create"] == 4
    _paid_once(db)


def test_stop_while_polling_returns_promptly_and_leaves_the_batch_open(tmp_path: Path) -> None:
    db, stop = _store(tmp_path), threading.Event()
    provider = _provider(turnaround=3600, wall_clock=True)
    threading.Timer(0.5, stop.set).start()
    start = time.monotonic()
    results = _session(db, provider, stop=stop, poll_seconds=600)
    assert time.monotonic() - start < 5 and results[-1].stopped
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["submitted"] and _status_counts(db) == {"pending": 20}


def test_stop_while_answers_are_kept_records_what_was_paid_and_calls_nothing(tmp_path: Path) -> None:
    db, stop = _store(tmp_path), threading.Event()
    provider = _provider(faults=LineFaults(fail_every=2))  # half the lines fail: a fallback would follow
    kept: list[str] = []

    def stop_after_three(outcome: Any) -> None:
        kept.append(outcome.id)
        if len(kept) == 3:
            stop.set()

    results = _session(db, provider, stop=stop, after_outcome=stop_after_three)
    # the answers already paid for are kept; the documents of failed lines wait: no fallback call
    assert results[-1].stopped and _status_counts(db) == {"extracted": 10, "pending": 10}
    assert len(_batch_rows(db)) == 4 and _sync_rows(db) == []  # every line recorded
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and len(_batch_rows(db)) == 4  # none recorded twice
    assert provider.calls["create"] == 1 and _sync_rows(db)
    _paid_once(db)


def _corpus(tmp_path: Path, n: int = 20) -> Path:
    import json

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(n)))
    return path


def test_stop_during_a_run_ends_it_stopped_without_polling(tmp_path: Path) -> None:
    import toolkit

    stop = threading.Event()
    result = toolkit.run(_corpus(tmp_path), lm=LM, store=f"sqlite:///{tmp_path / 'run.db'}", run_name="s",
                         progress=False, stop=stop, settings=RunSettings(mode="batch-api", batch_api=BatchApiSettings(
                             poll_seconds=60, on_submitted=lambda job, batch: stop.set())))
    assert result.summary.stop_reason and result.store.get_run("s")["status"] == "stopped"
    assert result.summary.lost == 0 and result.summary.pending == 20


def test_stop_set_before_a_run_sends_no_batch(tmp_path: Path) -> None:
    import toolkit

    stop = threading.Event()
    stop.set()
    result = toolkit.run(_corpus(tmp_path), lm=LM, store=f"sqlite:///{tmp_path / 'run.db'}", run_name="s",
                         progress=False, stop=stop, settings=RunSettings(mode="batch-api"))
    assert result.summary.stop_reason and result.store.get_run("s")["status"] == "stopped"
    assert result.store.batch_jobs("s") == []


# ------------------------------------------------------------------------------------ resume
def test_a_kill_during_the_fallback_records_no_line_twice(tmp_path: Path) -> None:
    import multiprocessing
    import os

    state = tmp_path / "provider"  # the provider keeps its files and batches there: it outlives the process
    faults = LineFaults(fail_every=2)

    def session_killed_in_the_fallback() -> None:
        db, service = open_store(f"sqlite:///{tmp_path / 'runs.db'}"), ExtractionService(LM)
        db.start_run(RUN, LM, "m", {})
        execute = service.execute

        def dies_after_one(pack: Any, documents: int, on_outcome: Any = None, **kwargs: Any) -> Any:
            def keep_then_die(outcome: Any) -> None:
                on_outcome(outcome)
                os._exit(9)  # killed once the fallback's first answer is kept

            return execute(pack, documents, on_outcome=keep_then_die, **kwargs)

        service.execute = dies_after_one
        _session(db, _provider(faults=faults, state_dir=state), service=service)

    child = multiprocessing.get_context("fork").Process(target=session_killed_in_the_fallback)
    child.start()
    child.join(120)
    db = _store(tmp_path)
    lines = len(_batch_rows(db))
    assert child.exitcode == 9 and lines == 4 and [j["status"] for j in db.batch_jobs(RUN)] == ["settled"]
    assert _status_counts(db) == {"extracted": 11, "pending": 9}  # 10 from the batch, 1 from the fallback
    provider = _provider(faults=faults, state_dir=state)
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and len(_batch_rows(db)) == lines
    assert len(provider.batches) == 1 and [j["status"] for j in db.batch_jobs(RUN)] == ["completed"]
    _paid_once(db)


def test_a_partly_read_job_keeps_its_paid_answers_until_every_document_is_decided(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _provider()
    _killed(db, provider, on_submitted=_interrupt)  # all 20 in one batch, then Ctrl-C
    _session(db, provider, DOCS[:8])  # resumed with a smaller --limit
    assert _status_counts(db) == {"extracted": 8, "pending": 12}
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["settled"]  # 12 of its documents still to decide
    _session(db, provider)  # the whole input again: the same batch's answers, nothing sent again
    assert _status_counts(db) == {"extracted": 20} and _sync_rows(db) == []
    assert provider.calls["upload"] == provider.calls["create"] == 1
    assert [j["status"] for j in db.batch_jobs(RUN)] == ["completed"]
    _paid_once(db)


def test_a_batch_accepted_just_before_a_crash_is_adopted_not_created_again(tmp_path: Path) -> None:
    db, provider = _store(tmp_path), _provider()
    create = provider.create

    def accepted_then_killed(input_file_id: str, metadata: dict[str, str]) -> str:
        create(input_file_id, metadata)
        raise KeyboardInterrupt  # the provider has the batch; the store never learns its id

    provider.create = accepted_then_killed  # type: ignore[method-assign]
    _killed(db, provider)
    [job] = db.batch_jobs(RUN)
    assert job["batch_id"] is None and len(provider.batches) == 1
    provider.create = create  # type: ignore[method-assign]
    _session(db, provider)
    assert _status_counts(db) == {"extracted": 20} and provider.calls["create"] == 1
    assert db.batch_jobs(RUN)[0]["batch_id"] == next(iter(provider.batches))
    _paid_once(db)
