"""Batch-API chaos (``chaos --mode batch-api``): the main job in batch-API mode, killed and resumed
until it is done, then checked: every document once in the store, none lost, no call paid twice.

:func:`run_batch_chaos` writes a synthetic corpus, serves the emulated batch provider over HTTP in
this process (the project's server, :mod:`toolkit.testing.serve`: state in a directory, batches
done ``turnaround`` seconds after creation, :class:`~toolkit.jobs.batchapi._emulated.LineFaults` in their
lines) and runs ``python -m toolkit extract --mode batch-api`` against it in a subprocess, again and
again under one run name. Each of the first ``kills`` sessions is SIGKILLed at a provider call drawn
from 1..``kill_after``: the kill lands once the provider has acted on the call (a file stored, a
batch accepted, a status or a result read) and before the client hears the reply, the crash windows
between a provider's step and the store's record of it. Every later session runs to its end.

The report counts from both sides: the store (documents, batch lines recorded more than once,
documents in answered batch lines per document, and documents those lines answered per document:
each at most 1.0) and the provider (batches created per uploaded file, documents sent in more than
one batch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.jobs.batchapi._emulated import EmulatedBatches, LineFaults
from toolkit.jobs.batchapi._replies import BATCH_PREFIX

LM = "emulated:hosted-api"
RUN = "chaos"
FAULTS = LineFaults(fail_every=9, cut_every=13, poison_every=17)  # failed, cut and unreadable lines: a fallback
SESSIONS_AFTER_KILLS = 3  # sessions allowed to end otherwise (stopped: resumed) once the kills are done


class KillingBatches(EmulatedBatches):
    """The emulated provider on the wall clock, which SIGKILLs the process :meth:`arm` names right
    after the ``at``-th API call it receives has taken effect; ``kills`` counts them by call."""

    def __init__(self, engine: Any, state_dir: Path, turnaround: float, faults: LineFaults) -> None:
        super().__init__(engine, state_dir, turnaround, faults, wall_clock=True)
        self.victim: int | None = None
        self.left = 0
        self.inner = 0  # > 0 while the provider reads its own files (no API call)
        self.kills: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # document id -> batches it was sent in

    def arm(self, pid: int, at: int | None) -> None:
        with self._lock:
            self.victim, self.left = (pid, at) if at else (None, 0)

    def _step(self, call: str) -> None:
        with self._lock:
            if self.victim is None or self.inner:
                return
            self.left -= 1
            if self.left <= 0:
                os.kill(self.victim, signal.SIGKILL)
                self.kills[call] += 1
                self.victim = None

    def upload(self, name: str, data: bytes, purpose: str = "batch") -> str:
        out = super().upload(name, data, purpose)
        self._step("upload")
        return out

    def create_batch(self, input_file_id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        from toolkit.lm import documents_in_prompt

        with self._lock:
            self.inner += 1
            try:
                out = super().create_batch(input_file_id, metadata)
                for raw in self.content(input_file_id).splitlines():
                    self.sent.update(d["id"] for d in documents_in_prompt(json.loads(raw)["body"]["messages"]))
            finally:
                self.inner -= 1
        self._step("create")
        return out

    def content(self, file_id: str) -> bytes:
        out = super().content(file_id)
        self._step("download")
        return out

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        out = super().retrieve_batch(batch_id)
        self._step("retrieve")
        return out

    def list_batches(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        out = super().list_batches(after, limit)
        self._step("list")
        return out


def _session(command: list[str], batches: KillingBatches, at: int | None, timeout: float) -> dict[str, Any]:
    """One process of the main job (killed at its ``at``-th provider call, if given)."""
    start = time.monotonic()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    batches.arm(proc.pid, at)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    batches.arm(proc.pid, None)
    killed = proc.returncode == -signal.SIGKILL
    return {"exit": proc.returncode, "killed_at_call": at if killed else None, "seconds": time.monotonic() - start,
            "stderr": "" if killed else err[-2000:], "summary": _summary(out)}


def _summary(out: str) -> dict[str, Any] | None:
    try:
        return json.loads(out)["summary"]
    except (ValueError, KeyError, TypeError):
        return None


def chaos_figures(db: Any, batches: KillingBatches, documents: int) -> dict[str, Any]:
    """What the store and the provider say after the last session (see the module docstring)."""
    statuses = db.statuses(RUN)
    attempts = db.attempts(RUN)
    lines = [a for a in attempts if a["batch_id"].startswith(BATCH_PREFIX)]
    answered = sum(a["n_docs"] for a in lines if a["outcome"] == "ok")  # documents in lines with a reply
    kept = sum(a["documents_ok"] for a in lines if a["outcome"] == "ok")  # documents those replies answered
    per_file = Counter(b["input_file_id"] for b in batches.batches.values())
    done = sum(1 for s in statuses.values() if s in ("extracted", "failed"))
    return {
        "documents": documents, "in_store": len(statuses),
        "extracted": sum(1 for s in statuses.values() if s == "extracted"),
        "failed": sum(1 for s in statuses.values() if s == "failed"),
        "pending": sum(1 for s in statuses.values() if s == "pending"), "lost": documents - done,
        "batch_lines": len(lines), "batch_lines_recorded_twice": sum(n - 1 for n in Counter(
            a["batch_id"] for a in lines).values()),
        "batch_line_docs_per_document": round(answered / documents, 4) if documents else 0.0,
        "batch_answers_per_document": round(kept / documents, 4) if documents else 0.0,
        "sync_calls": len(attempts) - len(lines),
        "provider_files": sum(1 for f in batches.files.values() if f["purpose"] == "batch"),
        "provider_batches": len(batches.batches), "provider_batches_per_file_max": max(per_file.values(), default=0),
        "provider_docs_sent_twice": sum(1 for n in batches.sent.values() if n > 1),
        "provider_sent_docs_per_document": round(sum(batches.sent.values()) / documents, 4) if documents else 0.0,
    }


def run_batch_chaos(docs: int = 2000, kill_after: int = 6, kills: int = 8, seed: int = 0,
                    faults: LineFaults = FAULTS, turnaround: float = 0.5, poll_seconds: float = 0.2,
                    max_docs: int = 10, workdir: str | Path | None = None, session_timeout: float = 600.0,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Kill and resume the main job in batch-API mode until it is done (see the module docstring);
    its figures, with ``ok``: every document once, none lost, nothing recorded or paid twice."""
    from toolkit.corpora import synthetic_documents
    from toolkit.lm import resolve_lm
    from toolkit.store import open_store
    from toolkit.testing.serve import EmulatorServer, ServeSettings

    rng = random.Random(seed)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchx-chaos-") as scratch:
        root = Path(workdir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                  for d in synthetic_documents(docs, seed=seed)))
        batches = KillingBatches(resolve_lm(LM).engine, root / "provider", turnaround, faults)
        server = EmulatorServer(ServeSettings(profile=batches.engine.profile), batches).start()
        db_url = f"sqlite:///{root / 'chaos.db'}"
        command = [sys.executable, "-m", "toolkit", "extract", "--corpus", str(corpus), "--lm", LM,
                   "--mode", "batch-api", "--api-base", server.url, "--poll-seconds", str(poll_seconds),
                   "--max-docs", str(max_docs), "--db", db_url, "--run", RUN, "--show", "0", "--json"]
        sessions: list[dict[str, Any]] = []
        try:
            while len(sessions) < kills + SESSIONS_AFTER_KILLS:
                killed = sum(1 for s in sessions if s["killed_at_call"])
                at = rng.randint(1, kill_after) if killed < kills else None
                sessions.append(_session(command, batches, at, session_timeout))
                if log is not None:
                    s = sessions[-1]
                    log(f"session {len(sessions)}: " + (f"killed at provider call {at}" if s["killed_at_call"]
                                                        else f"exit {s['exit']}") + f" ({s['seconds']:.1f} s)")
                if sessions[-1]["exit"] == 0 or sessions[-1]["exit"] not in (3, -signal.SIGKILL):
                    break
        finally:
            server.stop()
        db = open_store(db_url)
        try:
            figures = chaos_figures(db, batches, docs)
        finally:
            db.close()
    last = sessions[-1]
    figures.update(sessions=len(sessions), kills=sum(1 for s in sessions if s["killed_at_call"]),
                   kills_after=dict(batches.kills), last_exit=last["exit"],
                   last_error=None if last["exit"] == 0 else last["stderr"].strip()[-500:],
                   faults={k: v for k, v in vars(faults).items() if v}, real_seconds=round(time.monotonic() - start, 1))
    figures["ok"] = (last["exit"] == 0 and figures["lost"] == 0 and figures["in_store"] == docs
                     and figures["batch_lines_recorded_twice"] == 0 and figures["batch_line_docs_per_document"] <= 1.0
                     and figures["batch_answers_per_document"] <= 1.0
                     and figures["provider_batches_per_file_max"] <= 1 and figures["provider_docs_sent_twice"] == 0)
    return figures
