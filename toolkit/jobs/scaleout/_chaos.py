"""Chaos for a run on Ray (``chaos --runner ray --kill-worker-every S``): its workers killed while
it runs, as a crash or the out-of-memory killer kills them, then the store checked: every document
once, none lost, no answer paid twice.

:func:`kill_workers_every` kills a live worker of a run every few seconds (in a thread beside the
run); :func:`ray_chaos` runs a run beside it and returns the figures, from the store and the run's
recorded calls (see :func:`chaos_figures`)."""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolkit.jobs.scaleout._pool import actor_prefix
from toolkit.jobs.scaleout._runner import require_ray

if TYPE_CHECKING:
    from toolkit.jobs._pipeline import RunResult


def worker_names(run_id: str | None = None) -> list[str]:
    """The live Ray workers of run ``run_id`` (of every run: None), by actor name (none before
    this process has joined Ray: the run starts it)."""
    ray = require_ray()
    if not ray.is_initialized():
        return []
    start = re.escape(actor_prefix(run_id)) if run_id is not None else r"batchx-.+-"
    pattern = re.compile(start + r"\d+-worker-\d+")
    return sorted(n for n in ray.util.list_named_actors() if pattern.fullmatch(n))


def _local_pid(ray: Any, actor: Any) -> int | None:
    """The process id of ``actor`` where it runs on this machine (None elsewhere, or unknown)."""
    try:
        info = ray._private.state.actors(actor._actor_id.hex())  # Ray's actor table (no public call gives the pid)
        here = info["Address"]["NodeID"] == ray.get_runtime_context().get_node_id()
        return int(info["Pid"]) if here and info.get("Pid") else None
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def kill_workers_every(seconds: float, stop: threading.Event, run_id: str | None = None, seed: int = 0) -> list[str]:
    """Kill one live worker of run ``run_id`` (any run's: None), picked at random, every ``seconds``
    until ``stop`` is set, as a crash would: its process SIGKILLed mid-call (Ray reports an
    unexpected death, as after the out-of-memory killer), or ``ray.kill`` where it runs on another
    machine; returns the names killed. Run it in a thread beside the run."""
    ray = require_ray()
    rng, killed = random.Random(seed), []
    while not stop.wait(seconds):
        names = worker_names(run_id)
        if not names:
            continue
        name = rng.choice(names)
        try:
            actor = ray.get_actor(name)
            pid = _local_pid(ray, actor)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            else:
                ray.kill(actor, no_restart=True)
        except (ValueError, ProcessLookupError):  # it died in the meantime
            continue
        killed.append(name)
    return killed


def ray_chaos(run: Callable[[], RunResult], every: float, run_id: str, seed: int = 0) -> dict[str, Any]:
    """``run()`` (a run named ``run_id`` on Ray, returning its :class:`~toolkit.jobs._pipeline.RunResult`)
    with a worker killed every ``every`` seconds beside it; its :func:`chaos_figures`."""
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(kill_workers_every(every, stop, run_id, seed)),
                              name="chaos-killer", daemon=True)
    killer.start()
    start = time.monotonic()
    try:
        result = run()
    finally:
        stop.set()
        killer.join()
    return chaos_figures(result, killed, every, time.monotonic() - start)


def chaos_figures(result: RunResult, killed: list[str], every: float, seconds: float) -> dict[str, Any]:
    """What a run's store says after it: rows and distinct rows (each the number of documents),
    extracted, failed (and why: ``failed_reasons``), lost, calls, workers replaced and killed, and
    answers per extracted document (the documents each recorded call answered, summed: 1.0 when none
    was answered twice); ``ok``
    when every document is there once, none is lost or pending, and none was answered twice."""
    summary, store = result.summary.to_json(), result.store
    rows = store.documents(result.run_id)
    ids = [row["doc_id"] for row in rows]
    attempts = store.attempts(result.run_id)
    answered = sum(a["documents_ok"] for a in attempts)
    figures = {key: summary[key] for key in ("documents", "extracted", "failed", "pending", "lost", "calls",
                                             "workers_replaced", "stop_reason")}
    figures.update(rows=len(ids), distinct_rows=len(set(ids)), failed_calls=sum(a["outcome"] != "ok" for a in attempts),
                   answers_per_document=round(answered / max(1, figures["extracted"]), 4), kills=len(killed),
                   kill_worker_every=every, seconds=round(seconds, 1),
                   failed_reasons=dict(Counter(row["reason"] for row in rows if row["status"] == "failed")))
    figures["ok"] = (figures["rows"] == figures["distinct_rows"] == figures["documents"] and figures["lost"] == 0
                     and figures["pending"] == 0 and answered == figures["extracted"] and not figures["stop_reason"])
    return figures
