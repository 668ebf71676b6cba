"""Random sequences of batch-API sessions against the emulated provider (both formats), each ended
by a kill before or after a provider call, a kill while outcomes are kept (in a batch's settling or
in the synchronous fallback), Stop, a partial read of the input, or nothing; the provider restarts
now and then (forgetting every batch), faults in its lines. After the last session every document
is decided, no batch line is recorded twice, and, unless the provider forgot batches, no document
is answered by two batch lines. Deterministic: one seed per case."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_batchapi_resume import DOCS, LM, Killed, _batch_rows, _session, _status_counts, _store

from toolkit.jobs.batchapi import AnthropicBatches, BatchLimits
from toolkit.jobs.batchapi._emulated import EmulatedBatches, EmulatedMessageBatches, LineFaults
from toolkit.lm import resolve_lm

CALLS = ("upload", "create", "find", "retrieve", "content")


class Killing:
    """``provider``, killed before or after its ``at``-th call."""

    def __init__(self, provider: Any, at: int, after: bool) -> None:
        self.provider, self.left, self.after = provider, at, after

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.provider, name)
        if name not in CALLS:
            return method

        def call(*args: Any) -> Any:
            self.left -= 1
            if self.left == 0 and not self.after:
                raise Killed
            out = method(*args)
            if self.left == 0:
                raise Killed
            return out

        return call


def _sequence(seed: int, tmp_path: Path) -> tuple[Any, bool]:
    rng = random.Random(seed)
    db, engine = _store(tmp_path), resolve_lm(LM).engine
    anthropic = rng.random() < 0.3
    faults = LineFaults(fail_every=rng.choice([0, 2, 3, 5]), cut_every=rng.choice([0, 2, 4]),
                        poison_every=rng.choice([0, 3, 7]), expire=rng.random() < 0.15, fail_batch=rng.random() < 0.1)

    def restarted() -> Any:
        return AnthropicBatches(EmulatedMessageBatches(engine, faults=faults)) if anthropic else \
            EmulatedBatches(engine, faults=faults)

    provider, forgot = restarted(), False
    limits = BatchLimits(max_requests=rng.choice([1, 2, 50]))
    for session in range(12):
        if rng.random() < 0.1:
            provider, forgot = restarted(), True
        if anthropic and rng.random() < 0.5:
            provider = AnthropicBatches(provider.transport)  # a new process: its inline requests gone
        kind = rng.choice(["kill", "kill", "stop", "none", "partial", "kill-keeping", "kill-keeping"])
        kind = kind if session < 10 else "none"
        stop, hook, this = None, None, provider
        if kind == "kill":
            this = Killing(provider, rng.randint(1, 8), rng.random() < 0.5)
        elif kind == "stop":
            stop, kept = threading.Event(), [rng.randint(0, 6)]
            if not kept[0]:
                stop.set()

            def hook(outcome: Any, kept: list[int] = kept, stop: threading.Event = stop) -> None:
                kept[0] -= 1
                if kept[0] <= 0:
                    stop.set()
        elif kind == "kill-keeping":
            kept = [rng.randint(1, 25)]

            def hook(outcome: Any, kept: list[int] = kept) -> None:
                kept[0] -= 1
                if kept[0] == 0:
                    raise Killed

        docs = rng.sample(DOCS, rng.randint(1, 19)) if kind == "partial" else DOCS
        try:
            _session(db, this, docs, stop=stop, limits=limits, after_outcome=hook)
        except Killed:
            pass
        if kind == "none" and sum(_status_counts(db).values()) == len(DOCS) and "pending" not in _status_counts(db):
            break
    return db, forgot


@pytest.mark.parametrize("seed", range(40))
def test_a_random_sequence_of_sessions_ends_with_every_document_once_and_nothing_paid_twice(
        seed: int, tmp_path: Path) -> None:
    db, forgot = _sequence(seed, tmp_path)
    statuses = _status_counts(db)
    assert statuses.get("extracted", 0) + statuses.get("failed", 0) == len(DOCS)
    rows = _batch_rows(db)
    assert all(n == 1 for n in Counter(a["batch_id"] for a in rows).values())  # no line recorded twice
    if not forgot:  # a provider that forgot a batch lost answers it had been paid for: sent again
        answered = [a for a in rows if a["outcome"] == "ok"]
        assert sum(a["n_docs"] for a in answered) <= len(DOCS)
        assert sum(a["documents_ok"] for a in answered) <= len(DOCS)
