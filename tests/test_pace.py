"""One pace per run: a corpus read in chunks is paced as one stream (issue 23, item 2).

The rate-limit window, the adaptive concurrency, the breaker and any pause live for the whole run,
and a chunk's batches join the calls still in flight: a chunk boundary neither resets the pace nor
drains the pipeline. Attacked on the emulated provider in real time (a profile at a speed) and in
virtual time, through the main job (`toolkit.run`), by its recorded calls.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import toolkit
from toolkit.corpora import synthetic_documents
from toolkit.lm.emulated import load_profile
from toolkit.metrics import max_in_window
from toolkit.pipeline import RunSettings


def write_jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs), encoding="utf-8")
    return path


def tight_profile(tmp_path: Path, rpm: int, tpm: int) -> str:
    """hosted-api with limits that bind within a few windows, as a profile file."""
    profile = dataclasses.replace(load_profile("hosted-api"), name="hosted-tight", requests_per_minute=rpm,
                                  tokens_per_minute=tpm)
    path = tmp_path / "hosted-tight.json"
    path.write_text(json.dumps(profile.to_dict()))
    return str(path)


def windows_within(attempts, window: float) -> tuple[int, int]:
    """The most requests and budget tokens the recorded calls put in any ``window`` seconds."""
    calls = [(a["at"], a["budget_tokens"]) for a in attempts.iter_rows(named=True) if a["outcome"] != "cancelled"]
    times = [t for t, _ in calls]
    return max_in_window(times, [1] * len(calls), window), max_in_window(times, [t for _, t in calls], window)


@pytest.mark.slow
def test_chunk_boundaries_keep_the_window_and_the_learned_concurrency(tmp_path: Path) -> None:
    """300 documents in chunks of 30, real time at 100x: every window of the recorded calls within
    both limits, and each chunk's first call starts while calls of the one before are in flight
    (a chunk that drained the pipeline or reset the gate would start alone)."""
    rpm, tpm = 40, 24_000
    profile = tight_profile(tmp_path, rpm, tpm)
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(300, seed=3))
    result = toolkit.run(str(corpus), lm=f"emulated:{profile}@100", store=f"sqlite:///{tmp_path / 'p.db'}",
                         settings=RunSettings(chunk_docs=30, max_docs=5), progress=False)
    summary, attempts = result.summary, result.attempts
    assert summary["extracted"] == 300 and summary["lost"] == 0 and summary["failed"] == 0
    window = 60.0 / 100
    most_calls, most_tokens = windows_within(attempts, window)
    assert most_calls <= rpm and most_tokens <= tpm
    assert summary["rate_limits"]["tpm"] == tpm and summary["rate_limits"]["source"] == "backend"
    first_call: dict[int, tuple[float, int]] = {}  # chunk -> (time, calls in flight) of its first call
    assert summary["batches"] == 60  # 6 batches of 5 a chunk, numbered across the run
    for row in attempts.sort("at").iter_rows(named=True):
        chunk = (int(row["batch_id"].removeprefix("b").split(".")[0]) - 1) // 6
        first_call.setdefault(chunk, (row["at"], row["in_flight"]))
    assert sorted(first_call) == list(range(10))
    assert all(first_call[k][1] >= 2 for k in range(1, 10)), first_call


def test_a_virtual_run_in_chunks_takes_the_time_of_one_chunk(tmp_path: Path) -> None:
    """3,000 documents in chunks of 300 on the virtual clock: within 2% of the same run in one
    chunk (each chunk on a clock of its own restarted at 0 while the provider's window kept its
    times, and each drained to its last batch)."""
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_documents(3000, seed=5))
    seconds = {}
    for chunk in (300, 3000):
        result = toolkit.run(str(corpus), lm="emulated:hosted-api", store=f"sqlite:///{tmp_path / f'{chunk}.db'}",
                             settings=RunSettings(chunk_docs=chunk), progress=False)
        assert result.summary["extracted"] == 3000 and result.summary["lost"] == 0
        seconds[chunk] = result.summary["virtual_seconds"]
    assert abs(seconds[300] / seconds[3000] - 1) <= 0.02, seconds
