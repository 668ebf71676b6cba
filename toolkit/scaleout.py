"""Scale-out on Ray: the same job's chunks extracted by a pool of Ray workers, under one global
rate limit, with every outcome written once by the driver.

* **Workers** (:class:`ExtractionWorker`, Ray actors) each hold an
  :class:`~toolkit.service.ExtractionService` built from the run's LM, extraction settings and
  policy: the same packer, executor, DSPy module and validation as the local engine. A worker
  extracts the chunks it is given and returns their outcomes and call records.
* **One global pace** (:class:`GlobalPacing`, a named async actor): the requests- and
  tokens-per-minute windows, the adaptive concurrency limit and a ``Retry-After`` pause that every
  worker honours; each call asks it for a slot and for room in the window, so N workers together
  never exceed the provider's limits (Ray Data's own HTTP stage limits ``qps`` per worker only and
  ignores ``Retry-After``).
* **The driver** reads the corpus (streamed, through the same intake as a local run), submits
  chunks to the pool (a few per worker in flight), and writes each chunk's outcomes and calls to the
  store as it comes back: one writer, SQLite and IRIS alike. A worker that dies (killed, out of
  memory) is replaced and its chunk given to the pool again; nothing of that chunk was written, so
  each document is written once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

from toolkit.engines import CallSink, Chunk, ChunkResult, OutcomeSink
from toolkit.limits import Admission, ConcurrencyGate, SlidingWindowLimiter
from toolkit.policies import ExecutionPolicy

try:
    import ray
except ImportError:  # pragma: no cover - the error says how to install it
    ray = None

INSTALL = "the Ray engine needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')"


def _require_ray() -> Any:
    if ray is None:
        raise ValueError(INSTALL)
    return ray


class _Pacing:
    """The global pace's state (see the module docstring): a gate and a window on the actor's clock."""

    def __init__(self, policy: ExecutionPolicy) -> None:
        self.gate = ConcurrencyGate(policy.concurrency)
        self.window = SlidingWindowLimiter(policy.rate)

    async def acquire_slot(self) -> float:
        return await self.gate.acquire()

    async def release_slot(self, started: float, outcome: str) -> None:
        self.gate.release(started, outcome)

    async def pause(self, seconds: float) -> None:
        self.gate.pause_until(asyncio.get_running_loop().time() + seconds)

    async def half_open(self) -> None:
        self.gate.half_open()

    async def acquire_tokens(self, tokens: int) -> Admission:
        return await self.window.acquire(tokens)

    async def stats(self) -> dict[str, Any]:
        return {"max_in_flight": self.gate.max_seen, "limit": self.gate.limit, "history": self.gate.history}


class _RemoteSlot:
    def __init__(self, started: float) -> None:
        self.started = started
        self.outcome = "error"


class RemoteGate:
    """A worker's view of the global gate (the interface of :class:`~toolkit.limits.ConcurrencyGate`
    the executor uses); ``started`` times are the worker's loop time, the gate's own stay on the actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.in_flight = self.max_seen = 0
        self.history: list[tuple[float, int]] = []

    def slot(self) -> Any:
        gate = self

        class _Held:
            async def __aenter__(self) -> _RemoteSlot:
                self.remote_started = await gate.actor.acquire_slot.remote()
                gate.in_flight += 1
                gate.max_seen = max(gate.max_seen, gate.in_flight)
                self.held = _RemoteSlot(asyncio.get_running_loop().time())
                return self.held

            async def __aexit__(self, *exc: object) -> None:
                gate.in_flight -= 1  # the release goes without waiting for its reply: one round trip less
                gate.actor.release_slot.remote(self.remote_started, self.held.outcome)

        return _Held()

    def pause_until(self, when: float) -> None:
        self.actor.pause.remote(max(0.0, when - asyncio.get_running_loop().time()))

    def half_open(self) -> None:
        self.actor.half_open.remote()


class RemoteWindow:
    """A worker's view of the global rate-limit window."""

    def __init__(self, actor: Any, policy: ExecutionPolicy) -> None:
        self.actor = actor
        self.local = SlidingWindowLimiter(policy.rate)

    def check(self, tokens: int) -> None:
        self.local.check(tokens)

    async def acquire(self, tokens: int) -> Admission:
        return await self.actor.acquire_tokens.remote(tokens)


class _Worker:
    """A worker's state: its service (the same code path as a local run) and the global pace."""

    def __init__(self, lm: str, api_base: str | None, settings: Any, policy: ExecutionPolicy, pacing: str) -> None:
        from toolkit.service import ExtractionService

        actor = ray.get_actor(pacing)
        self.service = ExtractionService(lm, settings, policy=policy, api_base=api_base)
        self.service.pacing = lambda _: (RemoteGate(actor), RemoteWindow(actor, policy))

    def pid(self) -> int:
        return os.getpid()

    def extract(self, chunk: Chunk) -> ChunkResult:
        metrics = self.service.metrics
        seen = len(metrics.attempts)
        run = self.service.execute(chunk.pack(), len(chunk.documents), progress=False)
        return ChunkResult(run.report.outcomes, metrics.attempts[seen:], len(run.pack.batches), run.report.seconds,
                           run.stopped)


class RayEngine:
    """Chunks extracted by ``workers`` Ray workers (see the module docstring). ``address``: an
    existing cluster (``auto``, ``ray://HOST:PORT``); without it a Ray already started in this
    process is used, else a local one is started."""

    chunk_docs = 50  # small chunks spread the work evenly to the end and limit what a dying worker takes with it

    def __init__(self, service: Any, workers: int = 2, address: str | None = None, run_id: str = "run",
                 in_flight_per_worker: int = 2) -> None:
        _require_ray()
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if service.resolved.capabilities.virtual_time:
            raise ValueError(f"{service.resolved.spec} runs in virtual time, which processes cannot share: on Ray give "
                             "an emulated profile a speed, e.g. emulated:hosted-api@100 (real time, 100x faster)")
        if address is not None or not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        spec = (service.resolved.spec, service.api_base, service.settings, service.policy)
        name = f"batchx-pacing-{run_id}-{time.time_ns()}"
        self.pacing = ray.remote(_Pacing).options(name=name, max_concurrency=1000).remote(service.policy)
        self._spec = (*spec, name)
        self.workers = [self._worker() for _ in range(workers)]
        self.limit = workers * in_flight_per_worker
        self.pending: dict[Any, tuple[Chunk, Any]] = {}
        self.failed_calls = 0
        self.replaced = 0

    def _worker(self) -> Any:
        return ray.remote(_Worker).options(num_cpus=0.5).remote(*self._spec)  # one chunk at a time: its own calls

    def worker_pids(self) -> list[int]:
        return ray.get([w.pid.remote() for w in self.workers])

    def _dispatch(self, chunk: Chunk) -> None:
        """``chunk`` to the worker with the fewest chunks in hand."""
        worker = min(self.workers, key=lambda w: sum(1 for _, v in self.pending.values() if v is w))
        self.pending[worker.extract.remote(chunk)] = (chunk, worker)

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        self._dispatch(chunk)
        while len(self.pending) >= self.limit:
            yield from self._next(decided, record)

    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        while self.pending:
            yield from self._next(decided, record)

    def _next(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        (ready,), _ = ray.wait(list(self.pending), num_returns=1)
        chunk, worker = self.pending.pop(ready)
        try:
            result: ChunkResult = ray.get(ready)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
            # the worker died with the chunk: nothing of it was written; it goes to the pool again
            if worker in self.workers:  # the first of its chunks to come back: replace the worker
                self.replaced += 1
                self.workers[self.workers.index(worker)] = self._worker()
            self._dispatch(chunk)
            return
        record(result.attempts)
        self.failed_calls += sum(a.outcome != "ok" for a in result.attempts)
        for outcome in result.outcomes:
            if outcome.status != "pending":
                decided(outcome)
        yield result

    def summary(self) -> dict[str, Any]:
        return {"mode": "sync"}

    def close(self) -> None:
        for actor in (*self.workers, self.pacing):
            ray.kill(actor)
        self.workers, self.pending = [], {}
