"""The main job's promises attacked as a hostile user would, on the emulated provider: bad and
damaged input, unusable ids, configuration mistakes, two processes on one run, a changed corpus,
a pipe, and secrets in provider errors. Each ends as a recorded outcome and a clear exit code."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.execution import RunFailed
from toolkit.jobs import RunSettings, run

REPO = Path(__file__).resolve().parents[1]
LM = "emulated:hosted-api"
TEXT = "Patients with cystic fibrosis and asthma, case {}."


def lines(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"id": f"d{i}", "text": TEXT.format(i)}) for i in range(start, start + n)]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(db: Path, run_id: str | None = None) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        where = "" if run_id is None else " WHERE run_id = ?"
        return {d: (s, r) for d, s, r in conn.execute(f"SELECT doc_id, status, reason FROM batchx_documents{where}",
                                                         () if run_id is None else (run_id,))}


def run_statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute("SELECT status FROM batchx_runs")]


def extract(capsys: pytest.CaptureFixture[str], corpus: Path | str, db: Path, *extra: str) -> tuple[int, dict, str]:
    code = main(["extract", "--corpus", str(corpus), "--lm", LM, "--db", f"sqlite:///{db}", "--json", "--show", "0",
                 *extra])
    out = capsys.readouterr()
    return code, (json.loads(out.out)["summary"] if out.out.strip() else {}), out.err


# ------------------------------------------------------------------------------ 1. encodings
def test_a_surrogate_in_an_id_fails_that_record_and_the_chunk_goes_on(tmp_path: Path, capsys) -> None:
    rows = lines(1200)
    rows.insert(5, '{"id": "x\\ud800", "text": "asthma"}')
    code, s, _ = extract(capsys, write(tmp_path / "s.jsonl", rows), tmp_path / "s.db")
    stored = rows_of(tmp_path / "s.db")
    assert code == 0 and s["lost"] == 0 and s["extracted"] == 1200 and s["failed"] == 1
    (bad,) = [r for d, r in stored.items() if r[0] == "failed"]
    assert "s.jsonl:6: id 'x\\ud800' has an unpaired surrogate" in bad[1] and len(stored) == 1201


def test_a_surrogate_in_a_text_is_bad_input_not_a_provider_outage(tmp_path: Path, capsys) -> None:
    rows = lines(30)
    rows[5] = '{"id": "y", "text": "asthma \\ud800 here"}'
    code, s, _ = extract(capsys, write(tmp_path / "t.jsonl", rows), tmp_path / "t.db")
    assert code == 0 and s["stop_reason"] is None and s["pending"] == 0 and s["failed"] == 1
    assert "text has an unpaired surrogate" in rows_of(tmp_path / "t.db")["y"][1]


# ---------------------------------------------------------------------------- 2. damaged streams
def test_a_truncated_gzip_ends_the_run_cleanly_after_every_document_read(tmp_path: Path, capsys) -> None:
    raw = gzip.compress("".join(r + "\n" for r in lines(2000)).encode())
    corpus = tmp_path / "cut.jsonl.gz"
    corpus.write_bytes(raw[: len(raw) // 2])
    code, s, err = extract(capsys, corpus, tmp_path / "g.db")
    stored = rows_of(tmp_path / "g.db")
    assert code == 2 and "cut.jsonl.gz: damaged at line" in err and "Traceback" not in err
    assert s["lost"] == 0 and s["input_error"] and len(stored) == s["read"] > 400
    assert {st for st, _ in stored.values()} == {"extracted"} and run_statuses(tmp_path / "g.db") == ["stopped"]


def test_a_truncated_pubmed_xml_and_a_damaged_conll_line(tmp_path: Path, capsys) -> None:
    from tests.test_corpora import PUBMED_XML

    xml = tmp_path / "cut.xml"
    xml.write_text(PUBMED_XML[: PUBMED_XML.index('<PMID Version="1">333')], encoding="utf-8")
    code, s, err = extract(capsys, xml, tmp_path / "x.db")
    assert code == 2 and "cut.xml: damaged at line" in err and s["extracted"] == 2
    conll = tmp_path / "c.conll"
    conll.write_bytes(b"Asthma\tB-d\n\nCaf\xe9\tO\n\nFever\tB-d\n\n")
    code, s, err = extract(capsys, conll, tmp_path / "c.db")
    assert code == 0 and (s["extracted"], s["failed"], s["lost"]) == (2, 1, 0)


# ------------------------------------------------------------------------------- 3. and 4. ids
def test_ids_with_surrounding_whitespace_are_matched(tmp_path: Path, capsys) -> None:
    rows = [json.dumps({"id": f" d{i} ", "text": TEXT.format(i)}) for i in range(10)]
    code, s, _ = extract(capsys, write(tmp_path / "w.jsonl", rows), tmp_path / "w.db")
    # no retry: one call per batch, and the run's first document alone first (stream._probe_first)
    assert code == 0 and s["extracted"] == 10 and s["calls"] == s["batches"] + 1
    assert set(rows_of(tmp_path / "w.db")) == {f" d{i} " for i in range(10)}


def test_generated_ids_never_collide_with_real_ones(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "g.jsonl"
    rows = [
        '{"text": "no id"}',                                               # 1: bad, no id
        json.dumps({"id": "g.jsonl:1", "text": TEXT.format(1)}),            # what the old scheme generated
        json.dumps({"id": "bad-input:1", "text": TEXT.format(2)}),          # the reserved prefix
        json.dumps({"id": "d3", "text": TEXT.format(3)}),
        json.dumps({"id": "d3", "text": "another text"}),                  # id reused
        json.dumps({"id": "x" * 400, "text": TEXT.format(5)}),              # too long for the store
    ]
    code, s, _ = extract(capsys, write(corpus, rows), tmp_path / "g.db")
    stored = rows_of(tmp_path / "g.db")
    assert code == 0 and len(stored) == len(rows) and s["lost"] == 0
    assert stored["g.jsonl:1"][0] == stored["d3"][0] == "extracted"
    assert "reserved" in stored["bad-input:3"][1] and "already used" in stored["bad-input:5"][1]
    assert "longer than 300" in stored["bad-input:6"][1] and "missing or invalid id" in stored["bad-input:1"][1]


def test_a_rejected_id_is_kept_on_its_failed_row(tmp_path: Path, capsys) -> None:
    """Issue 24, item 12: every record's row is found by the id it gave, whatever is wrong with it;
    an id the store cannot hold, or already taken, gets a generated one and its reason quotes it."""
    given = [
        ("tab\there", "a control character (U+0009)"), ("ctl\x01", "a control character (U+0001)"),
        ("new\nline", "a control character (U+000A)"), ("del\x7f", "a control character (U+007F)"),
        ("c1\x85", "a control character (U+0085)"), ("   ", "is blank"), ("\t", "is blank"),
    ]
    rows = [json.dumps({"id": i, "text": TEXT.format(n)}) for n, (i, _) in enumerate(given)]
    rows += [json.dumps({"id": "d1", "text": TEXT.format(1)}), json.dumps({"id": 1, "text": TEXT.format(2)}),
             json.dumps({"id": "1", "text": TEXT.format(3)}),  # the same id once a number is text: taken
             json.dumps({"id": "tab\there", "text": "another"}),  # a rejected id given twice: the second is taken
             json.dumps({"id": "x\ud800", "text": TEXT.format(4)}),  # the store cannot hold it
             json.dumps({"id": "y" * 301, "text": TEXT.format(5)}), json.dumps({"id": 2.5, "text": TEXT.format(6)}),
             json.dumps({"id": [1, 2], "text": TEXT.format(7)}), json.dumps({"id": None, "text": TEXT.format(8)}),
             json.dumps({"id": "", "text": TEXT.format(9)})]
    code, s, _ = extract(capsys, write(tmp_path / "ids.jsonl", rows), tmp_path / "ids.db")
    stored = rows_of(tmp_path / "ids.db")
    assert code == 0 and s["lost"] == 0 and len(stored) == len(rows) and s["extracted"] == 2
    for n, (doc_id, why) in enumerate(given, 1):
        status, reason = stored[doc_id]
        assert status == "failed" and f"ids.jsonl:{n}: id {doc_id!r} " in reason and why in reason, (doc_id, reason)
        assert reason.isprintable()
    assert stored["d1"][0] == stored["1"][0] == "extracted"
    generated = {n: stored[f"bad-input:{n}"][1] for n in range(10, 18)}
    assert "id '1' already used for a different text" in generated[10]
    assert "taken by an earlier record" in generated[11] and "'x\\ud800' has an unpaired surrogate" in generated[12]
    assert "longer than 300 characters ('yyy" in generated[13] and "(2.5)" in generated[14]
    assert "([1, 2])" in generated[15] and "(null)" in generated[16] and "('')" in generated[17]


def test_a_pubtator_file_cut_inside_an_id_line_blames_only_the_fragment(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "cut.pubtator"
    corpus.write_text("101|t|Asthma.\n101|a|Wheeze in children.\n\n102|t|Cystic fibrosis.\n\n10", encoding="utf-8")
    code, s, _ = extract(capsys, corpus, tmp_path / "p.db")
    stored = rows_of(tmp_path / "p.db")
    assert code == 0 and len(stored) == 3 and stored["101"][0] == stored["102"][0] == "extracted"
    ((fragment, (status, reason)),) = [(d, r) for d, r in stored.items() if d not in ("101", "102")]
    assert status == "failed" and "cut.pubtator:6" in reason and fragment.startswith("bad-input:")


# --------------------------------------------------------------------------------------- 5. strict
def test_strict_checks_the_whole_input_before_any_call(tmp_path: Path, capsys) -> None:
    rows = lines(1600)
    rows[1500] = '{"id": "broken", "text": '
    corpus = write(tmp_path / "late.jsonl", rows)
    code, _, err = extract(capsys, corpus, tmp_path / "strict.db", "--strict")
    assert code == 2 and "late.jsonl:1501: malformed JSON" in err
    assert not (tmp_path / "strict.db").exists() or rows_of(tmp_path / "strict.db") == {}


# ------------------------------------------------------------------------------- 6. configuration
@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing.jsonl", "no such file"),
    (lambda p: p, "is a directory"),
    (lambda p: (p / "blob.bin").write_bytes(bytes(range(256)) * 8) and p / "blob.bin", "unknown corpus format"),
])
def test_a_bad_corpus_path_is_one_line_and_leaves_no_run(tmp_path: Path, capsys, make, needle: str) -> None:
    db = tmp_path / "cfg.db"
    code, _, err = extract(capsys, make(tmp_path), db)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists() or run_statuses(db) == []


@pytest.mark.parametrize("extra, needle", [
    (("--lm", "openai/x", "--api-base", "http://bob:hun/ter2pass@127.0.0.1:1/v1"), "percent-encode"),
    (("--lm", "ollama_chat/llama3", "--mode", "batch-api"), "batch API"),
    (("--mode", "batch-api", "--runner", "ray"), "local runner"),
], ids=["api-base-password", "no-batch-api", "batch-api-on-ray"])
def test_options_are_refused_before_the_run_is_written(tmp_path: Path, capsys, extra: tuple, needle: str) -> None:
    """Every option is checked before a run row exists (a refused run would show as abandoned and be
    what --resume picks), in one line that quotes no part of a password."""
    db = tmp_path / "opts.db"
    code, _, err = extract(capsys, write(tmp_path / "c.jsonl", lines(3)), db, *extra)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert "hun" not in err and "ter2pass" not in err
    assert not db.exists() or run_statuses(db) == []


def test_a_budget_above_the_tokens_per_minute_limit_is_refused_before_the_run(tmp_path: Path, capsys) -> None:
    db = tmp_path / "tpm.db"
    code, _, err = extract(capsys, write(tmp_path / "c.jsonl", lines(3)), db, "--budget", "500000")
    assert code == 2 and "tokens per minute" in err and err.count("\n") == 1
    assert run_statuses(db) == []


def test_a_locked_database_is_one_line_at_start_and_a_failed_run_mid_way(tmp_path: Path, capsys) -> None:
    db = tmp_path / "lock.db"
    corpus = write(tmp_path / "c.jsonl", lines(40))
    extract(capsys, corpus, db, "--run", "warm")  # tables exist
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    code = main(["extract", "--corpus", str(corpus), "--lm", LM, "--db", f"sqlite:///{db}?timeout=0.2", "--json"])
    err = capsys.readouterr().err
    holder.rollback()
    assert code == 2 and "database is locked" in err and err.count("\n") == 1
    locked = threading.Event()

    def lock_once(tally: dict) -> None:  # another process takes the database mid-run, for a while
        if tally["documents"] == 5 and not locked.is_set():
            locked.set()
            holder.execute("BEGIN EXCLUSIVE")
            threading.Timer(1.0, holder.rollback).start()

    with pytest.raises(RunFailed, match="database is locked"):
        run(str(corpus), lm=LM, store=f"sqlite:///{db}?timeout=0.2", run_name="mid",
            settings=RunSettings(max_docs=2), progress=lock_once)
    from toolkit.store import open_store

    status = {r["run_id"]: r["status"] for r in open_store(f"sqlite:///{db}").runs()}
    assert status["mid"] == "failed"  # recorded once the other process let go
    holder.close()


def test_a_run_name_the_store_cannot_hold_is_refused(tmp_path: Path, capsys) -> None:
    corpus = write(tmp_path / "c.jsonl", lines(2))
    code, _, err = extract(capsys, corpus, tmp_path / "n.db", "--run", "r" * 300)
    assert code == 2 and "run name" in err


# ------------------------------------------------------------------------------- 7. two processes
def _extract_cmd(corpus: Path, db: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "toolkit", "extract", "--corpus", str(corpus), "--lm", LM, "--db", f"sqlite:///{db}",
            "--run", name, "--json", "--show", "0"]


@pytest.mark.slow
def test_two_processes_on_one_run_name_one_runs_the_other_is_refused(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.jsonl", lines(3000))
    db = tmp_path / "two.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(_extract_cmd(corpus, db, "shared"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(json.loads(out)["summary"] for code, out, _ in results if code == 0)
    loser = next(err for code, _, err in results if code == 2)
    assert "in use by another process" in loser and winner["lost"] == 0 and winner["extracted"] == 3000
    with sqlite3.connect(db) as conn:
        calls = conn.execute("SELECT COUNT(*) FROM batchx_attempts WHERE run_id = 'shared'").fetchone()[0]
    assert calls == winner["calls"]  # every call paid once


# ----------------------------------------------------------------------------- 8. a changed corpus
def test_a_run_name_reused_with_changed_texts_extracts_them_again(tmp_path: Path, capsys) -> None:
    db = tmp_path / "c.db"
    first = write(tmp_path / "v1.jsonl", [json.dumps({"id": "a", "text": "Patients with asthma."}),
                                          json.dumps({"id": "b", "text": "Patients with malaria."})])
    assert extract(capsys, first, db, "--run", "same")[0] == 0
    second = write(tmp_path / "v2.jsonl", [json.dumps({"id": "a", "text": "Patients with asthma."}),
                                           json.dumps({"id": "b", "text": "Patients with cystic fibrosis."})])
    code, s, _ = extract(capsys, second, db, "--run", "same")
    assert code == 0 and s["skipped_already_extracted"] == 1 and s["changed_since_extracted"] == 1
    with sqlite3.connect(db) as conn:
        mentions = {m for (m,) in conn.execute("SELECT mention FROM batchx_entities WHERE doc_id = 'b'")}
    assert "malaria" not in {m.lower() for m in mentions}


# ---------------------------------------------------------------------------------------- 15. pipes
def test_a_corpus_from_a_pipe_needs_its_format_and_is_read_once(tmp_path: Path) -> None:
    data = "".join(r + "\n" for r in lines(25)).encode()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "toolkit", "extract", "--corpus", "-", "--lm", LM, "--json", "--show", "0"]
    ok = subprocess.run(base + ["--db", f"sqlite:///{tmp_path / 'p.db'}", "--format", "jsonl"], input=data, env=env,
                        capture_output=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr.decode()[-1000:]
    assert json.loads(ok.stdout)["summary"]["extracted"] == 25
    for extra, needle in ((["--db", f"sqlite:///{tmp_path / 'q.db'}"], "is a pipe"),
                          (["--db", f"sqlite:///{tmp_path / 'r.db'}", "--format", "jsonl", "--strict"],
                           "reads it twice")):
        refused = subprocess.run(base + extra, input=data, env=env, capture_output=True, cwd=tmp_path, timeout=120)
        assert refused.returncode == 2 and needle in refused.stderr.decode() and b"Traceback" not in refused.stderr


# --------------------------------------------------------------------------------------- 10. secrets
class _EchoingServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose errors echo the request's headers: a 401 for model
    ``echo-auth`` (the run stops), else a 400 "maximum context length" (the document fails)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        auth = request.get("model") == "echo-auth"
        what = "invalid credentials" if auth else "maximum context length exceeded"
        body = json.dumps({"error": {"message": f"upstream failed: {what}; headers: {dict(self.headers)}",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(401 if auth else 400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_server_that_echoes_the_api_key_leaves_it_nowhere(tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-ECHOED0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = tmp_path / "sec.db"
    corpus = str(write(tmp_path / "c.jsonl", lines(1)))
    base = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        for model, api_base in (("echo-auth", base), ("echo-long", base),  # the key, echoed back
                                ("echo-auth", base.replace("//", "//bob:hunter2pass@"))):  # credentials in the URL
            code = main(["extract", "--corpus", corpus, "--lm", f"openai/{model}", "--api-base", api_base, "--db",
                         f"sqlite:///{db}", "--json", "--show", "5"])
            assert code in (0, 3)
    finally:
        server.shutdown()
    out = capsys.readouterr()
    with sqlite3.connect(db) as conn:
        stored = "\n".join(str(v) for table in ("batchx_runs", "batchx_documents", "batchx_attempts")
                           for row in conn.execute(f"SELECT * FROM {table}") for v in row)
    assert "upstream failed" in stored and "[REDACTED]" in stored  # the echoed errors were recorded
    for text in (stored, out.out, out.err):
        assert secret not in text and "hunter2pass" not in text
