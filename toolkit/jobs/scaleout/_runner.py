"""The driver of a run on Ray (:class:`RayRunner`; the design is in :mod:`toolkit.jobs.scaleout`)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolkit.execution import STOP_REQUESTED, DocumentOutcome
from toolkit.jobs._runners import CallSink, Chunk, ChunkResult, OutcomeSink, RateLimits, RunnerFigures
from toolkit.jobs.scaleout._pool import RayService, WorkerPool, connect, ray_reason
from toolkit.jobs.scaleout._worker import BEGAN, CONTROL

T = TypeVar("T")

try:
    import ray
except ImportError:  # pragma: no cover - the error says how to install it
    ray = None  # type: ignore[assignment, unused-ignore]  # an optional extra: the module is None without it

INSTALL = "the Ray runner needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')"


def require_ray() -> Any:
    if ray is None:
        raise ValueError(INSTALL)
    return ray


@dataclass
class _Dispatch:
    """A chunk given to a worker: the stream of what it does, and what came of it so far."""

    key: int  # the chunk's: the same when what is left of it goes to another worker
    chunk: Chunk
    owner: str
    stream: Any  # Ray's ObjectRefGenerator
    began: bool = False
    done: set[str] = field(default_factory=set)  # documents decided
    result: ChunkResult = field(default_factory=lambda: ChunkResult([], [], 0, 0.0))

    def take(self, event: ChunkResult, decided: OutcomeSink, record: CallSink) -> int:
        """A call's ``event``: its record to ``record`` (paid for: recorded first), then the outcomes
        it decided to ``decided``, and kept; how many of its calls failed."""
        record(event.attempts)
        for outcome in event.outcomes:
            if outcome.status != "pending":
                decided(outcome)
        self.add(event)
        return sum(a.outcome != "ok" for a in event.attempts)

    def add(self, event: ChunkResult) -> None:
        result = self.result
        result.outcomes += [o for o in event.outcomes if o.status != "pending"]
        result.attempts += event.attempts
        result.batches += event.batches
        result.seconds += event.seconds
        self.done.update(o.id for o in event.outcomes if o.status != "pending")

    def rest(self) -> Chunk:
        """The chunk's documents not decided yet."""
        chunk = self.chunk
        kept = [(d, n) for d, n in zip(chunk.documents, chunk.token_counts) if d.id not in self.done]
        return Chunk([d for d, _ in kept], [n for _, n in kept], chunk.packing)


class RayRunner:
    """Chunks extracted by ``workers`` Ray workers (see :mod:`toolkit.jobs.scaleout`). ``address``: an
    existing cluster (``auto``, ``ray://HOST:PORT``); without it a Ray already started in this
    process is used, else a local one is started. ``stop``: the run's stop event. ``patience``:
    seconds without any slot of the global gate coming free before a worker gives up waiting (and
    seconds a stop waits for calls in flight); default twice the call timeout (600 s without one)."""

    chunk_docs = 50  # small chunks spread the work evenly to the end and limit what a dying worker takes with it
    max_deaths = 3  # deaths in a row with nothing of a chunk decided before it is halved (one document: it fails)
    tick = 0.5  # seconds between looks at the stop event while waiting for the workers

    def __init__(self, service: RayService, workers: int = 2, address: str | None = None, run_id: str = "run",
                 in_flight_per_worker: int = 2, stop: threading.Event | None = None,
                 patience: float | None = None) -> None:
        require_ray()
        connect(service, workers, address)
        self.stop = stop or threading.Event()
        self.patience = patience or 2 * (service.policy.call_timeout or 300.0)
        self.pool = WorkerPool(service, run_id, self.patience)
        self.pending: dict[Any, _Dispatch] = {}  # by its stream
        self.limit = workers * in_flight_per_worker
        self.fruitless: dict[int, int] = {}  # chunk key -> its workers' deaths in a row with nothing decided
        self.failed_calls = self.replaced = 0
        self.stopping: str | None = None
        self.deadline = float("inf")  # when a stop gives up waiting for calls in flight
        self._keys = itertools.count()
        self._sinks: tuple[OutcomeSink, CallSink] | None = None  # the run's, for close()
        self._limits: RateLimits | None = None  # the limits the run paced by (from the pace, at close)
        try:
            for _ in range(workers):
                self.pool.start()
            self.pool.await_start()
        except BaseException:
            self._kill()
            raise

    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        self._sinks = (decided, record)
        if not self._halting():
            self._dispatch(next(self._keys), chunk)
        yield from self._work(decided, record, lambda: len(self.pending) >= self.limit)

    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        self._sinks = (decided, record)
        yield from self._work(decided, record, lambda: bool(self.pending))

    def _dispatch(self, key: int, chunk: Chunk) -> None:
        """``chunk`` to the worker with the fewest chunks in hand."""
        owner = min(self.pool.workers, key=lambda o: sum(d.owner == o for d in self.pending.values()))
        stream = self.pool.workers[owner].extract.options(num_returns="streaming").remote(chunk)
        self.pending[stream] = _Dispatch(key, chunk, owner, stream)

    def _halting(self) -> bool:
        if self.stop.is_set():
            self._halt(STOP_REQUESTED)
        return self.stopping is not None

    def _halt(self, reason: str) -> None:
        """Stop the run: no chunk is sent, no worker starts a call; calls in flight finish."""
        if self.stopping is None:
            self.stopping, self.deadline = reason, time.monotonic() + self.patience
            for worker in self.pool.workers.values():
                worker.halt.options(concurrency_group=CONTROL).remote()

    def _work(self, decided: OutcomeSink, record: CallSink, busy: Callable[[], bool]) -> Iterator[ChunkResult]:
        """Take the workers' events while ``busy()``; once stopping, until every chunk in hand has
        come back (or the deadline), then the stop."""
        while not self._halting() and busy():
            yield from self._next(decided, record)
        if self.stopping is not None:
            while self.pending and time.monotonic() < self.deadline:
                yield from self._next(decided, record)
            yield ChunkResult([], [], 0, 0.0, self.stopping)

    def _next(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        """One event of a worker: a call (recorded, then its outcomes kept), a chunk's end, a death."""
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.tick)
        if not ready:
            return
        dispatch = self.pending.pop(ready[0])
        self.pending[dispatch.stream] = dispatch  # to the back: every worker's events are read in turn
        try:
            event = ray.get(next(dispatch.stream))
        except StopIteration:
            del self.pending[dispatch.stream]
            self.fruitless.pop(dispatch.key, None)
            if dispatch.rest().documents:  # undecided without a stop: never left behind unsaid
                self._halt(f"a Ray worker ended a chunk with {len(dispatch.rest().documents)} documents undecided")
            yield dispatch.result
            return
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            del self.pending[dispatch.stream]
            yield dispatch.result  # the calls it made before it died, recorded as they ended
            self._died(dispatch, exc, decided)
            return
        except ray.exceptions.RayError as exc:
            del self.pending[dispatch.stream]
            self._halt(f"a Ray worker failed: {ray_reason(exc)}")
            yield dispatch.result
            return
        if event == BEGAN:
            dispatch.began = True
            return
        self.failed_calls += dispatch.take(event, decided, record)
        if event.stopped:
            self._halt(event.stopped)

    def _died(self, dispatch: _Dispatch, exc: BaseException, decided: OutcomeSink) -> None:
        """A worker died with ``dispatch``: its slots come back, it is replaced, and the rest of the
        chunk goes to the pool again, halved after :attr:`max_deaths` deaths in a row with nothing
        decided; a document alone that died that often fails. No worker can start: the run stops."""
        why = ray_reason(exc)
        if self.pool.retire(dispatch.owner, replace=self.stopping is None):
            self.replaced += 1
        rest = dispatch.rest()
        if self.stopping is not None or not rest.documents:
            return
        if getattr(exc, "actor_init_failed", False):
            self._halt(f"no Ray worker can start: {why}; unfinished documents stay pending")
            return
        deaths = 0 if dispatch.done else self.fruitless.get(dispatch.key, 0) + int(dispatch.began)
        if deaths < self.max_deaths:
            self.fruitless[dispatch.key] = deaths
            self._dispatch(dispatch.key, rest)
            return
        self.fruitless.pop(dispatch.key, None)
        for part in _halves(rest):  # each on its own: the document that kills sets the others free
            self._dispatch(next(self._keys), part)
        if len(rest.documents) == 1:
            decided(DocumentOutcome(rest.documents[0].id, "failed",
                                    reason=f"worker died {deaths} times in a row on this document alone: {why}"))

    def summary(self) -> RunnerFigures:
        return {"mode": "sync", "rate_limits": self._limits, "workers_replaced": self.replaced}

    def close(self) -> None:
        """Kill the workers, once every chunk in hand has come back and what its calls did is
        recorded (the run ended by an exception: they are told to stop first)."""
        try:
            if self.pending and self._sinks is not None:
                self._halt("the run ended")
                decided, record = self._sinks
                for _ in self._work(_quiet(decided), _quiet(record), lambda: False):
                    pass
        finally:
            self._kill()

    def _kill(self) -> None:
        self._limits = self.pool.kill()  # the limits the run paced by, kept for its summary
        self.pending = {}


def _quiet(sink: Callable[[T], None]) -> Callable[[T], None]:
    """``sink``, which gives up at its first error (the run is ending by one already)."""
    failed: list[BaseException] = []

    def call(value: T) -> None:
        if not failed:
            try:
                sink(value)
            except Exception as exc:  # noqa: BLE001 - the run already ends by an exception
                failed.append(exc)

    return call


def _halves(chunk: Chunk) -> list[Chunk]:
    """``chunk`` in two halves (none for a single document: it is the one that kills)."""
    if len(chunk.documents) < 2:
        return []
    half = len(chunk.documents) // 2
    return [Chunk(chunk.documents[part], chunk.token_counts[part], chunk.packing)
            for part in (slice(None, half), slice(half, None))]
