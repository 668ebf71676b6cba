"""Prices keep their promises (issue 24, item 8): a price file is checked when it is resolved, so a
bad one is one line and exit 2 before the first call; a run whose tokens cannot all be priced (no
batch prices, a provider reporting more cached tokens than prompt tokens) ends with a null cost,
never a crash after every document is done."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from toolkit.cli import main
from toolkit.core import Counts
from toolkit.core._pricing import PRICE_KEYS, Prices, prices_for, resolve_prices
from toolkit.jobs import cost_summary

LM = "emulated:hosted-api"
TEXT = "Patients with cystic fibrosis and asthma, case {}."
GOOD = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}


def _corpus(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXT.format(i)}) + "\n" for i in range(n)))
    return path


def _price_file(tmp_path: Path, content: object, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip().startswith("{") else {}), out.err


# ------------------------------------------------------------------------------ priced at the end
def test_a_batch_api_run_without_batch_prices_ends_with_a_null_cost(tmp_path: Path, capsys) -> None:
    code, out, err = _cli(capsys, "extract", "--corpus", str(_corpus(tmp_path)), "--lm", LM, "--mode", "batch-api",
                          "--price", str(_price_file(tmp_path, GOOD)), "--db", f"sqlite:///{tmp_path / 'x.db'}",
                          "--json", "--show", "0")
    s = out["summary"]
    assert code == 0 and (s["extracted"], s["lost"]) == (12, 0) and s["batch_api_calls"] > 0, err
    assert s["cost_usd"] is None and s["cost_per_1k_docs"] is None and s["priced_as"] == "gpt-4o-mini"
    assert "no batch prices" in s["cost_note"]


def test_a_price_map_entry_without_batch_prices_leaves_only_the_batch_part_unpriced() -> None:
    prices = Prices("m", 1e-6, 2e-6)
    sync = cost_summary(prices, Counts(calls=2, tokens_in=100, tokens_out=10), 4)
    assert sync["cost_usd"] == pytest.approx(100e-6 + 20e-6) and sync["cost_note"] is None
    mixed = cost_summary(prices, Counts(calls=3, tokens_in=150, tokens_out=15), 4, Counts(calls=1, tokens_in=50))
    assert mixed["cost_usd"] is None and "1 calls went through a batch API" in mixed["cost_note"]


class _CachedTooMuch(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering as the emulated provider does, but reporting more
    cached tokens than the prompt had (a provider's usage is data, not a promise)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from toolkit.jobs.batchapi._emulated import answer
        from toolkit.lm import EmulatedEngine, load_profile

        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        reply = answer(EmulatedEngine(load_profile("hosted-api")), body)
        usage = reply["usage"]
        usage["prompt_tokens_details"] = {"cached_tokens": usage["prompt_tokens"] + 1000}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cached_too_much() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CachedTooMuch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_more_cached_tokens_than_prompt_tokens_is_priced_as_all_cached(tmp_path: Path, capsys, cached_too_much: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret")
    code, out, err = _cli(capsys, "extract", "--corpus", str(_corpus(tmp_path, 4)), "--lm", "openai/test-model",
                          "--api-base", cached_too_much, "--price", "gpt-4o-mini", "--db",
                          f"sqlite:///{tmp_path / 'x.db'}", "--json", "--show", "0")
    s = out.get("summary", {})
    assert code == 0 and s["extracted"] == 4 and s["cached_tokens"] > s["tokens_in"] > 0, err
    prices = prices_for("gpt-4o-mini")
    assert prices is not None and prices.cached_input is not None
    assert s["cost_usd"] == pytest.approx(s["tokens_in"] * prices.cached_input + s["tokens_out"] * prices.output)


@settings(max_examples=200, deadline=None)
@given(tokens=st.tuples(*[st.integers(-10, 10**7)] * 6), calls=st.integers(0, 5),
       batch_prices=st.booleans())
def test_any_counts_are_priced_or_null_never_an_error(tokens: tuple[int, ...], calls: int, batch_prices: bool) -> None:
    prices = Prices("m", 1e-7, 4e-7, 5e-8, *((5e-8, 2e-7) if batch_prices else (None, None)))
    counts = Counts(calls=calls + 1, tokens_in=tokens[0], tokens_out=tokens[1], cached_tokens=tokens[2])
    batch = Counts(calls=calls, tokens_in=tokens[3], tokens_out=tokens[4], cached_tokens=tokens[5])
    out = cost_summary(prices, counts, 3, batch)
    assert out["priced_as"] == "m" and (out["cost_usd"] is None) == (calls > 0 and not batch_prices)


# ------------------------------------------------------------------------------- refused at once
BAD_FILES = [
    ("[]", "not an array ([])"),
    ({"input_cost_per_token": [1], "output_cost_per_token": 1e-6}, "input_cost_per_token must be a number"),
    ({"input_cost_per_token": "0.1", "output_cost_per_token": 1e-6}, "not a string"),
    ({"input_cost_per_token": True, "output_cost_per_token": 1e-6}, "not a boolean"),
    ({"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6}, "0 or more, not -1e-06"),
    ('{"input_cost_per_token": NaN, "output_cost_per_token": 1e-6}', "finite"),
    ('{"input_cost_per_token": 1e999, "output_cost_per_token": 1e-6}', "finite"),
    ({"input_cost_per_token": 1e-6, "output_cost_per_token": 10**400}, "finite"),
    ({"input_cost_per_token": 1e-6}, "needs both input_cost_per_token and output_cost_per_token"),
    ({"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6, "input_cost_per_token_batches": {}}, "an object"),
    ({"gpt-4o-mini": [1e-6]}, "'gpt-4o-mini' must map to"),
    ({"gpt-4o-mini": GOOD, "other": {**GOOD, "cache_read_input_token_cost": -1}}, "'other': cache_read"),
    ({"other-model": GOOD}, "no input and output price for 'openai/gpt-4o-mini'"),
    ("{not json", "price file"),
    (b"\xff\xfe{}", "price file"),
]


@pytest.mark.parametrize(("content", "needle"), BAD_FILES)
def test_a_bad_price_file_is_refused_when_resolved(tmp_path: Path, content: object, needle: str) -> None:
    path = tmp_path / "p.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _price_file(tmp_path, content, "p.json")
    with pytest.raises(ValueError, match="price file") as caught:
        resolve_prices("openai/gpt-4o-mini", str(path))
    assert needle in str(caught.value) and "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("command", ["extract", "bench", "eval", "plan"])
@pytest.mark.parametrize(("content", "needle"), [("[]", "not an array"),
                                                 ({"input_cost_per_token": [1], "output_cost_per_token": 1}, "array")])
def test_every_command_refuses_a_bad_price_file_in_one_line_before_any_call(
        tmp_path: Path, capsys, command: str, content: object, needle: str, request: pytest.FixtureRequest) -> None:
    price = str(_price_file(tmp_path, content))
    db = tmp_path / "x.db"
    if command == "extract":
        argv = ["extract", "--corpus", str(_corpus(tmp_path)), "--lm", LM, "--db", f"sqlite:///{db}"]
    elif command == "bench":
        argv = ["bench", "--lm", LM, "--corpus", "synthetic", "--docs", "8"]
    else:
        gold = str(request.getfixturevalue("ncbi_devel"))
        argv = ["eval", "--lm", LM, "--gold", gold, "--limit", "2"] if command == "eval" else \
            ["plan", "--profile", "hosted-api", "--corpus", gold]
    code, _, err = _cli(capsys, *argv, "--price", price)
    assert code == 2 and err.startswith("error: price file") and needle in err and err.count("\n") == 1, err
    if db.exists():  # the store is opened first, but no run is written
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM batchx_runs").fetchone()[0] == 0


def test_a_good_price_file_prices_as_written(tmp_path: Path) -> None:
    single = resolve_prices(None, str(_price_file(tmp_path, {**GOOD, "input_cost_per_token_batches": 0,
                                                             "output_cost_per_token_batches": 3e-7}, "mine.json")))
    assert single == Prices("mine", 1.5e-7, 6e-7, None, 0.0, 3e-7, str(tmp_path / "mine.json"))
    assert single.batch_priced and isinstance(single.batch_input, float)
    by_model = resolve_prices("openai/gpt-4o-mini", str(_price_file(tmp_path, {"gpt-4o-mini": GOOD})))
    assert by_model is not None and (by_model.input, by_model.output, by_model.batch_priced) == (1.5e-7, 6e-7, False)
    assert set(PRICE_KEYS) >= set(GOOD)
