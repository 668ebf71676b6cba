"""Chaos for a run on Ray: its workers killed while it runs (``chaos --engine ray --kill-worker-every S``)."""

from __future__ import annotations

import random
import re
import threading

from toolkit.scaleout.engine import actor_prefix, require_ray


def worker_names(run_id: str | None = None) -> list[str]:
    """The live Ray workers of run ``run_id`` (of every run: None), by actor name (none before
    this process has joined Ray: the run starts it)."""
    ray = require_ray()
    if not ray.is_initialized():
        return []
    start = re.escape(actor_prefix(run_id)) if run_id is not None else r"batchx-.+-"
    pattern = re.compile(start + r"\d+-worker-\d+")
    return sorted(n for n in ray.util.list_named_actors() if pattern.fullmatch(n))


def kill_workers_every(seconds: float, stop: threading.Event, run_id: str | None = None, seed: int = 0) -> list[str]:
    """Kill one live worker of run ``run_id`` (any run's: None), picked at random, every ``seconds``
    until ``stop`` is set, as a crash would (``ray.kill``: the process ends at once, mid-call);
    returns the names killed. Run it in a thread beside the run."""
    ray = require_ray()
    rng, killed = random.Random(seed), []
    while not stop.wait(seconds):
        names = worker_names(run_id)
        if not names:
            continue
        name = rng.choice(names)
        try:
            ray.kill(ray.get_actor(name), no_restart=True)
        except ValueError:  # it died in the meantime
            continue
        killed.append(name)
    return killed
