"""The store contract: the same suite on SQLite (always) and on a live IRIS when IRIS_* is set."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings, strategies as st

from toolkit.core import Counts, Entity, Relationship
from toolkit.execution import AttemptRecord
from toolkit.jobs._pipeline import _Doc
from toolkit.store import IRIS_ENV, LeaseLost, RunBusy, StoreError, iris_settings, open_store
from toolkit.store._dialect import SQLITE, iris_dialect


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
    store.mark_pending(run_id, [("a", 10, None, "sha-a"), ("b", 20, None, None)])
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


def test_ids_differing_in_case_spaces_or_control_characters_are_distinct_rows(store, run_id: str) -> None:
    """Issue 24, item 12: every record's row is found by its own id, exactly (IRIS compares strings
    without case or trailing spaces unless told otherwise)."""
    ids = ["d1", "D1", "d1 ", " d1", "d1\t", "d\x011", "d1\n", "   ", "ǅ1", "ǆ1", "x" * 300]
    store.start_run(run_id, "lm", "m", {})
    store.mark_pending(run_id, [(i, 1, None, None) for i in ids])
    store.save_documents(run_id, [doc(i, f"mention of {n}", status="failed" if n % 2 else "extracted",
                                      reason="bad input" if n % 2 else None) for n, i in enumerate(ids)])
    assert store.statuses(run_id) == {i: "failed" if n % 2 else "extracted" for n, i in enumerate(ids)}
    for n, i in enumerate(ids):
        assert [e.text for e in store.entities(run_id, i)] == [f"mention of {n}"]


def test_entity_offsets_and_confidence_round_trip(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    store.save_documents(run_id, [doc("d", "cystic fibrosis")])
    (e,) = store.entities(run_id)
    assert (e.start, e.end, e.confidence, e.type) == (0, 15, 0.5, "DISEASE")


def test_attempts_append_across_sessions(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    record = AttemptRecord("b000001", ("a", "b"), 1, "ok", seconds=1.5,
                           counts=Counts(calls=1, tokens_in=100, tokens_out=20, entities=3))
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


def test_an_outcome_keeps_what_mark_pending_recorded(store, run_id: str) -> None:
    """The executor's outcomes carry no token count or digest: saving one keeps the pending row's."""
    from toolkit.execution import DocumentOutcome

    store.start_run(run_id, "lm", "m", {})
    store.mark_pending(run_id, [("a", 17, "file.jsonl:1", "d1g35t")])
    store.save_documents(run_id, [DocumentOutcome("a", "extracted")])
    (row,) = store.documents(run_id)
    assert (row["status"], row["token_count"], row["source"]) == ("extracted", 17, "file.jsonl:1")
    assert store.digests(run_id) == {"a": "d1g35t"}


def test_secrets_in_reasons_errors_and_summaries_are_redacted(store, run_id: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdefABCDEF")
    echo = "401 from https://bob:hunter2pass@api.example/v1: Authorization: Bearer sk-live-0123456789abcdefABCDEF"
    store.start_run(run_id, "lm", "m", {})
    store.save_documents(run_id, [doc("a", status="failed", reason=echo)])
    store.save_attempts(run_id, [AttemptRecord("b1", ("a",), 1, "error", error=echo)])
    store.finish_run(run_id, "stopped", {"stop_reason": echo})
    stored = [store.documents(run_id)[0]["reason"], store.attempts(run_id)[0]["error"],
              store.get_run(run_id)["summary"]]
    for text in stored:
        assert "sk-live" not in text and "hunter2pass" not in text and "[REDACTED]" in text
        assert "api.example" in text  # the rest of the message is kept


def test_long_informational_text_is_clipped_to_its_column(store, run_id: str) -> None:
    store.start_run(run_id, "lm", "m", {})
    store.save_documents(run_id, [_Doc("a", "failed", "why " * 1000, source="/very/long/path/" * 100)])
    (row,) = store.documents(run_id)
    assert len(row["reason"]) == 2000 and len(row["source"]) == 500 and row["reason"].endswith("…")


# --------------------------------------------------------------------------------- run leases
def test_a_run_is_owned_by_one_store_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    first, second = open_store(url), open_store(url)
    assert first.start_run("r", "lm", "m", {}) is False
    with pytest.raises(RunBusy, match="in use by another process"):
        second.start_run("r", "lm", "m", {})
    first.renew_lease("r")
    first.finish_run("r", "finished", {})
    assert second.start_run("r", "lm", "m", {}) is True  # released: taken again, resumable
    assert [r["status"] for r in second.runs()] == ["running"]


def _forge_owner(url: str, run_id: str, owner: str, lease_until: float) -> None:
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE batchx_runs SET owner = ?, lease_until = ? WHERE run_id = ?", (owner, lease_until, run_id))


def test_a_run_whose_owner_died_or_whose_lease_expired_is_taken_over(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'lease.db'}"
    db = open_store(url)
    db.start_run("r", "lm", "m", {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _forge_owner(url, "r", f"{socket.gethostname()}:{dead.stdout.strip()}:x", time.time() + 3600)
    assert [r["status"] for r in open_store(url).runs()] == ["abandoned"]  # its process has exited
    other = open_store(url)
    assert other.start_run("r", "lm", "m", {}) is True  # same host, owner's process gone: at once
    _forge_owner(url, "r", "elsewhere:1:y", time.time() + 3600)  # a live owner on another host
    with pytest.raises(RunBusy):
        open_store(url).start_run("r", "lm", "m", {})
    _forge_owner(url, "r", "elsewhere:1:y", time.time() - 1)  # ... whose lease expired
    assert open_store(url).start_run("r", "lm", "m", {}) is True


def test_a_store_that_lost_its_run_writes_nothing_more(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    db = open_store(url)
    db.start_run("r", "lm", "m", {})
    _forge_owner(url, "r", "elsewhere:1:y", time.time() + 3600)  # taken over after our lease expired
    with pytest.raises(LeaseLost):
        db.save_documents("r", [doc("a", "asthma")])
    with pytest.raises(LeaseLost):
        db.renew_lease("r")
    assert open_store(url).statuses("r") == {}


def test_a_database_locked_longer_than_the_busy_timeout_is_a_store_error(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    open_store(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked.*busy timeout"):
            open_store(f"sqlite:///{path}?timeout=0.2").start_run("r", "lm", "m", {})
    finally:
        holder.rollback()
        holder.close()


def test_tables_of_an_older_version_gain_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE batchx_runs (run_id VARCHAR(200) NOT NULL PRIMARY KEY, lm VARCHAR(200), "
                     "model_id VARCHAR(300), settings TEXT, started VARCHAR(40), finished VARCHAR(40), "
                     "status VARCHAR(20), summary TEXT)")
        conn.execute("INSERT INTO batchx_runs (run_id, status) VALUES ('old', 'finished')")
        conn.execute("CREATE TABLE batchx_documents (run_id VARCHAR(200) NOT NULL, doc_id VARCHAR(300) NOT NULL, "
                     "status VARCHAR(16) NOT NULL, reason VARCHAR(2000), token_count INTEGER, source VARCHAR(500), "
                     "updated VARCHAR(40), PRIMARY KEY (run_id, doc_id))")
        conn.execute("INSERT INTO batchx_documents VALUES ('old', 'a', 'extracted', NULL, 5, NULL, NULL)")
    db = open_store(f"sqlite:///{path}")
    assert db.digests("old") == {"a": None} and db.start_run("old", "lm", "m", {}) is True


# ------------------------------------------------------------------------------------ dialects
def test_iris_dialect_ddl() -> None:
    ddl = "\n".join(iris_dialect(schema="Batchx").create_statements())
    assert "CREATE TABLE IF NOT EXISTS Batchx.batchx_documents" in ddl
    assert "TEXT" not in ddl and "BOOLEAN" not in ddl and "VARCHAR(32000)" in ddl
    assert "VARCHAR " not in ddl.replace("VARCHAR(", "")  # every VARCHAR has a length
    # ids compare exactly (IRIS's default SQLUPPER makes d1, D1 and "d1 " one key): every VARCHAR but TEXT's
    assert re.findall(r"VARCHAR\(\d+\)(?! COLLATE %EXACT)", ddl) == ["VARCHAR(32000)"] * ddl.count("VARCHAR(32000)")
    assert "COLLATE %EXACT" in iris_dialect().add_column("batchx_documents", "doc_id")
    assert "COLLATE" not in "".join(SQLITE.create_statements())
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


_ANY_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))


def leaked(secret: str, text: str, background: str) -> set[str]:
    """Pieces of 3 characters of ``secret`` in ``text`` not there by chance (in ``background``)."""
    return {p for p in (secret[i:i + 3] for i in range(len(secret) - 2)) if p in text and p not in background}


def _store_error(url: str) -> str:
    """The one line a user sees for ``url`` (every store URL here is refused or unreachable)."""
    with pytest.raises(StoreError) as caught:
        open_store(url)
    return str(caught.value)


@settings(max_examples=150, deadline=None)
@given(password=st.text(_ANY_PRINTABLE, min_size=3, max_size=40), encoded=st.booleans(),
       shape=st.sampled_from(["iris://admin:{}@127.0.0.1:1/USER", "iris://admin:{}@127.0.0.1:1/USER?schema=Batchx",
                              "sqlite://me:{}@/x.db", "sqlite://me:{}@/x.db?timeout=1", "postgres://me:{}@db/x",
                              "me:{}@db.example"]))
def test_no_piece_of_a_store_password_is_in_its_error(password: str, encoded: bool, shape: str) -> None:
    """Issue 24, item 9: a password with ``/``, ``#`` or ``?`` (or anything else) is never quoted."""
    if shape.startswith("iris"):
        pytest.importorskip("iris", reason="intersystems-irispython not installed")
    written = quote(password, safe="") if encoded else password
    error = _store_error(shape.format(written))
    background = _store_error(shape.format("pw")) + _store_error(shape.format("p/w"))  # the same, another password
    assert not leaked(password, error, background) and not leaked(written, error, background), error
    if not encoded and any(c in password for c in "/?#") and shape.startswith("iris"):
        assert "percent-encode" in error and "%2F" in error


def test_an_iris_password_with_a_slash_is_refused_with_how_to_encode_it() -> None:
    with pytest.raises(StoreError, match="percent-encode") as caught:
        iris_settings("iris://admin:1234/x9@db.example:1972/USER")
    assert "1234" not in str(caught.value) and "x9" not in str(caught.value)
    assert iris_settings("iris://admin:1234%2Fx9@db.example:1972/USER")["password"] == "1234/x9"
    assert iris_settings("iris://admin:p[a@ss@db.example:1972/USER")["password"] == "p[a@ss"  # read as meant
    for bad_port in ("iris://admin:pw@db:99999/USER", "iris://admin:pw@db:19x2/USER"):
        with pytest.raises(StoreError, match="HOST:PORT"):
            iris_settings(bad_port)


def test_a_bad_iris_port_in_the_environment_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_HOST", "db.example")
    monkeypatch.setenv("IRIS_PORT", "19x2")
    with pytest.raises(StoreError, match="IRIS_PORT must be a port number"):
        iris_settings("iris://")


def test_a_sqlite_url_with_a_user_is_refused_without_quoting_it() -> None:
    error = _store_error("sqlite://me:t0p/secret@/x.db")
    assert "takes no user or password" in error and "t0p" not in error and "secret" not in error


def test_bad_store_urls() -> None:
    with pytest.raises(StoreError, match="unknown store") as info:
        open_store("postgres://admin:t0psecret@db.example/x")
    assert "t0psecret" not in str(info.value)
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("sqlite://relative.db")


@pytest.mark.parametrize("schema", ["Batchx;DROP TABLE x", "a.b", "1abc", "with space", "x" * 200])
def test_an_iris_schema_must_be_a_plain_identifier(schema: str) -> None:
    pytest.importorskip("iris", reason="intersystems-irispython not installed")
    with pytest.raises(StoreError, match="plain identifier"):
        open_store(f"iris://me:pw@127.0.0.1:1/USER?schema={schema}")
    assert iris_dialect("Batchx_2").table("t") == "Batchx_2.t"


def test_a_sqlite_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}")


def test_dropped_mentions_round_trip_and_are_replaced_with_their_document(store, run_id: str) -> None:
    from toolkit.core import Dropped
    from toolkit.execution import DocumentOutcome

    store.start_run(run_id, "lm", "m", {})
    leak = Dropped("Huntington disease", "DISEASE", "a", "leak", "b")
    store.save_documents(run_id, [DocumentOutcome("a", "extracted", dropped=[leak, Dropped("x", "DISEASE", "a",
                                                                                           "ungrounded")])])
    assert store.dropped(run_id)[0] == leak and len(store.dropped(run_id)) == 2
    store.save_documents(run_id, [DocumentOutcome("a", "extracted")])
    assert store.dropped(run_id) == []
