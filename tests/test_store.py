"""The store contract: the same suite on SQLite (always) and on a live IRIS when IRIS_* is set."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from toolkit.documents import Entity, Relationship
from toolkit.metrics import AttemptRecord
from toolkit.pipeline import _Doc
from toolkit.store import IRIS_ENV, StoreError, iris_settings, open_store
from toolkit.store.dialect import SQLITE, iris_dialect


def _iris_url() -> str | None:
    if all(os.environ.get(k) for k in IRIS_ENV):
        return "iris://"
    return None


@pytest.fixture(params=["sqlite", "iris"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        db = open_store(f"sqlite:///{tmp_path / 'contract.db'}")
    else:
        url = _iris_url()
        if url is None:
            pytest.skip("no live IRIS: set IRIS_HOST, IRIS_PORT, IRIS_NAMESPACE, IRIS_USER, IRIS_PASSWORD to run")
        db = open_store(url)
    yield db
    db.close()


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def doc(doc_id: str, *mentions: str, status: str = "extracted", reason: str | None = None) -> _Doc:
    entities = [Entity(m, "DISEASE", doc_id, 0.5, 0, len(m)) for m in mentions]
    rels = [Relationship(mentions[0], mentions[1], "ASSOCIATED", doc_id)] if len(mentions) > 1 else []
    return _Doc(doc_id, status, reason, entities, rels, token_count=42, source="test")


def test_runs_are_created_once_and_finished(store, run_id: str) -> None:
    assert store.start_run(run_id, "emulated:x", "model@sha", {"budget": 8192}) is False
    assert store.start_run(run_id, "emulated:x", "model@sha", {"budget": 8192}) is True
    store.finish_run(run_id, "finished", {"lost": 0})
    row = store.get_run(run_id)
    assert row["status"] == "finished" and row["model_id"] == "model@sha" and '"lost": 0' in row["summary"]
    assert store.get_run("no-such-run") is None


def test_saving_a_document_again_replaces_its_rows(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    store.mark_pending(run_id, [("a", 10, None), ("b", 20, None)])
    assert store.statuses(run_id) == {"a": "pending", "b": "pending"}
    store.save_documents(run_id, [doc("a", "asthma", "eczema"), doc("b", status="failed", reason="timeout")])
    store.save_documents(run_id, [doc("a", "asthma")])  # a re-run of document a
    assert store.statuses(run_id) == {"a": "extracted", "b": "failed"}
    assert store.count("batchx_documents", run_id) == 2
    assert [(e.text, e.source_document_id) for e in store.entities(run_id)] == [("asthma", "a")]
    assert store.relationships(run_id) == []
    assert store.documents(run_id)[1]["reason"] == "timeout"


def test_hostile_text_and_ids_are_stored_verbatim(store, run_id: str) -> None:
    evil_id = "x'); DROP TABLE batchx_documents; --"
    evil = ["Robert'); DROP TABLE batchx_entities;--", 'a "quoted" ; SELECT * FROM batchx_runs', "naïve ∑ 漢字 \\ %_"]
    store.start_run(run_id, "lm", "m", {"note": "'; DELETE FROM batchx_runs; --"})
    store.save_documents(run_id, [doc(evil_id, *evil)])
    assert store.statuses(run_id) == {evil_id: "extracted"}
    assert [e.text for e in store.entities(run_id, evil_id)] == evil
    rel = store.relationships(run_id)[0]
    assert (rel.source, rel.target) == (evil[0], evil[1])
    assert store.get_run(run_id) is not None


def test_entity_offsets_and_confidence_round_trip(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    store.save_documents(run_id, [doc("d", "cystic fibrosis")])
    (e,) = store.entities(run_id)
    assert (e.start, e.end, e.confidence, e.type) == (0, 15, 0.5, "DISEASE")


def test_attempts_append_across_sessions(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    record = AttemptRecord("b000001", ("a", "b"), 1, "ok", seconds=1.5, tokens_in=100, tokens_out=20, entities=3)
    store.save_attempts(run_id, [record, record])
    rows = store.attempts(run_id)
    assert len(rows) == 2 and rows[0]["n_docs"] == 2 and rows[0]["tokens_in"] == 100


def test_runs_do_not_see_each_other(store, run_id: str) -> None:
    other = run_id + "-b"
    for r in (run_id, other):
        store.start_run(r, "lm", "m", {})
    store.save_documents(run_id, [doc("a", "asthma")])
    assert store.statuses(other) == {} and store.entities(other) == []


def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    open_store(url).close()
    db = open_store(url)
    db.start_run("r", "lm", "m", {})
    assert db.get_run("r") is not None


# ------------------------------------------------------------------------------------ dialects
def test_iris_dialect_ddl() -> None:
    ddl = "\n".join(iris_dialect(schema="Batchx").create_statements())
    assert "CREATE TABLE IF NOT EXISTS Batchx.batchx_documents" in ddl
    assert "TEXT" not in ddl and "BOOLEAN" not in ddl and "VARCHAR(32000)" in ddl
    assert "VARCHAR " not in ddl.replace("VARCHAR(", "")  # every VARCHAR has a length
    old = iris_dialect(if_not_exists=False)
    assert "IF NOT EXISTS" not in "".join(old.create_statements())
    assert old.is_already_exists(RuntimeError("[SQLCODE: <-201>:<Table or view name not unique>]"))
    assert "REAL" in "".join(SQLITE.create_statements())


def test_iris_settings_from_url_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in zip(IRIS_ENV, ("db.example", "51773", "APP", "me", "s3cret")):
        monkeypatch.setenv(key, value)
    from_env = iris_settings("iris://")
    assert (from_env["hostname"], from_env["port"], from_env["namespace"], from_env["username"]) == \
        ("db.example", 51773, "APP", "me")
    explicit = iris_settings("iris://u:p%40ss@host:1972/USER?schema=Batchx")
    assert (explicit["password"], explicit["schema"], explicit["namespace"]) == ("p@ss", "Batchx", "USER")


def test_unreachable_iris_is_one_clear_fast_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("iris", reason="intersystems-irispython not installed")
    start = time.perf_counter()
    with pytest.raises(StoreError, match="cannot connect to IRIS at 127.0.0.1:1/USER") as info:
        open_store("iris://me:secret@127.0.0.1:1/USER")
    assert time.perf_counter() - start < 15
    assert "secret" not in str(info.value)


def test_bad_store_urls() -> None:
    with pytest.raises(StoreError, match="unknown store"):
        open_store("postgres://x")
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("sqlite://relative.db")
