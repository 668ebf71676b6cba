"""A Ray worker of the scale-out runner: an :class:`~toolkit.jobs._service.ExtractionService` built from
the run's LM, extraction settings and policy (the same packer, executor, DSPy module and validation
as a local run) whose gate and window are the global ones (:mod:`toolkit.jobs.scaleout._pacing`).

:meth:`Worker.extract` is a streaming generator: the driver gets each call's record with the
outcomes it decided as soon as the call ends, so what a worker paid for is written even when the
worker dies later in the chunk. :meth:`Worker.halt` (in its own concurrency group, so it runs while
a chunk does) is the run's stop: no call starts after it; calls in flight finish and are streamed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from toolkit.core import redact
from toolkit.execution import AttemptRecord, DocumentOutcome, ExecutionPolicy, Gate, RunMetrics, Window
from toolkit.jobs._runners import Chunk, ChunkResult
from toolkit.jobs.scaleout._pacing import RemoteGate, RemoteWindow

if TYPE_CHECKING:
    from toolkit.extraction import ExtractionSettings

BEGAN = "began"  # a chunk's first event: the worker has started on it
CONTROL = "control"  # the concurrency group of the calls that must not wait for a chunk


class _Relay(RunMetrics):
    """The worker's metrics, which also hand each call's record on (``sink``) as it is made."""

    def __init__(self) -> None:
        super().__init__()
        self.sink: Callable[[AttemptRecord], None] | None = None

    def record_attempt(self, record: AttemptRecord) -> None:
        super().record_attempt(record)
        if self.sink is not None:
            self.sink(record)


class Worker:
    """A worker's state: its service, the global pace, its stop event. ``owner``: its name, which
    owns its slots of the global gate."""

    def __init__(self, lm: str, api_base: str | None, settings: ExtractionSettings, policy: ExecutionPolicy,
                 pacing: str, owner: str, patience: float) -> None:
        import ray

        from toolkit.jobs._service import ExtractionService

        actor = ray.get_actor(pacing)
        self.stop = threading.Event()
        self.stuck: str | None = None
        self.relay = _Relay()

        def remote_pace(_: ExecutionPolicy) -> tuple[Gate, Window]:
            return RemoteGate(actor, owner, patience, self._stuck), RemoteWindow(actor, owner, policy, self._stuck)

        self.service = ExtractionService(lm, settings, policy=policy, api_base=api_base, pacing=remote_pace,
                                         metrics=self.relay)

    def pid(self) -> int:
        return os.getpid()

    def halt(self) -> None:
        """Stop: no call starts after this (called in the ``control`` group)."""
        self.stop.set()

    def _stuck(self, reason: str) -> None:
        self.stuck = self.stuck or reason
        self.stop.set()

    def extract(self, chunk: Chunk) -> Iterator[str | ChunkResult]:
        """:data:`BEGAN`, then one :class:`ChunkResult` per call (its record, the outcomes it
        decided), then the chunk's end (outcomes decided without a call, batches, seconds, why it
        stopped)."""
        yield BEGAN
        events: queue.SimpleQueue[ChunkResult | None] = queue.SimpleQueue()
        thread = threading.Thread(target=self._extract, args=(chunk, events.put), daemon=True)
        thread.start()
        while (event := events.get()) is not None:
            yield event
        thread.join()

    def _extract(self, chunk: Chunk, put: Callable[[ChunkResult | None], None]) -> None:
        decided: list[DocumentOutcome] = []

        def take() -> list[DocumentOutcome]:
            out = decided[:]
            decided.clear()
            return out

        self.relay.sink = lambda record: put(ChunkResult(take(), [record], 0, 0.0))
        try:
            run = self.service.execute(chunk.pack(), len(chunk.documents), progress=False, on_outcome=decided.append,
                                       stop=self.stop)
            batches = len(run.pack.batches) if run.pack is not None else 0
            put(ChunkResult(take(), [], batches, run.report.seconds, self.stuck or run.stopped))
        except Exception as exc:  # noqa: BLE001 - the driver stops the run with it, in one line
            put(ChunkResult(take(), [], 0, 0.0, self.stuck or f"a Ray worker failed: {one_line(exc)}"))
        finally:
            self.relay.sink = None
            put(None)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line (the first of a group's), without secrets."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    lines = str(exc).strip().splitlines()
    return (redact(f"{type(exc).__name__}: {lines[0] if lines else ''}") or "")[:300]
