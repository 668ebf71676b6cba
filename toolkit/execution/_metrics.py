"""Per-run metrics: one row per batch attempt, and the ``ProcessingMetrics`` derived from results.

Each run owns its own :class:`RunMetrics`; nothing is shared between runs unless a caller asks for
the process-wide :meth:`BatchMetricsTracker.get_instance` of the original contract.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import typing
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from toolkit.core import FIELDS as COUNT_FIELDS, Baseline, BatchExtractionResult, Counts, ProcessingMetrics

if TYPE_CHECKING:
    import polars as pl

    PolarsType = pl.DataType | type[pl.DataType]  # a column's type: an instance (List(Utf8)) or a class (Int64)


@dataclass(frozen=True)
class AttemptRecord:
    """One call on one batch: what was sent, how long it took, what came of it (``counts``: that
    call's :class:`~toolkit.core._counts.Counts`, the decisions it led to included)."""

    batch_id: str
    document_ids: tuple[str, ...]
    attempt: int
    outcome: str  # ok | error | fatal
    started: float = 0.0  # seconds on the run's clock
    at: float = 0.0  # wall-clock time the rate limiter let it through (epoch seconds): comparable across processes
    seconds: float = 0.0
    delay_before: float = 0.0  # backoff, pause and queueing before this call
    rate_wait: float = 0.0  # part of it spent waiting for the rate limiter
    in_flight: int = 0  # calls in flight when this one started, itself included
    error_class: str | None = None
    error: str | None = None
    counts: Counts = field(default_factory=Counts)

    def flat(self) -> dict[str, object]:
        """The record as one flat row: its fields, then one column per count."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "counts"}
        return {**row, **self.counts.to_dict()}

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt, output) tokens the model reported for this call, or None when it reported none."""
        return (self.counts.tokens_in, self.counts.tokens_out) if self.counts.usage_reports else None


class RunMetrics:
    """Thread-safe tracker for one run (``run_id``); ``baseline`` enables ``speedup_factor``."""

    def __init__(self, run_id: str | None = None, baseline: Baseline | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.baseline = baseline
        self._lock = threading.Lock()
        self._attempts: list[AttemptRecord] = []
        self._metrics = ProcessingMetrics()
        self._started: float | None = None
        self._finished: float | None = None
        self.failed_attempts = 0  # calls that raised (each is retried, split or ends a document)

    def start(self) -> None:
        """Mark the start (the first call wins: a tracker reused by several runs spans them all)."""
        if self._started is None:
            self._started = time.perf_counter()

    def finish(self) -> None:
        self._finished = time.perf_counter()

    def record_attempt(self, record: AttemptRecord) -> None:
        with self._lock:
            self._attempts.append(record)
            self.failed_attempts += record.outcome != "ok"

    def update_with_batch(self, result: BatchExtractionResult, batch_size: int) -> None:
        with self._lock:
            self._metrics.update_with_batch(result, batch_size)

    @property
    def attempts(self) -> list[AttemptRecord]:
        with self._lock:
            return list(self._attempts)

    def get_statistics(self) -> ProcessingMetrics:
        """A snapshot (a copy: later updates do not change it)."""
        with self._lock:
            snapshot = copy.copy(self._metrics)
        if self._started is not None:
            snapshot.wall_seconds = (self._finished or time.perf_counter()) - self._started
        snapshot.calculate_speedup(self.baseline)
        return snapshot

    def to_polars(self) -> pl.DataFrame:
        """One row per call, typed from :class:`AttemptRecord` (never inferred from the first rows)."""
        import polars as pl

        frame = pl.DataFrame([a.flat() for a in self.attempts], schema=attempts_schema())
        return frame.with_columns(pl.lit(self.run_id).alias("run"))


def attempts_schema() -> dict[str, PolarsType]:
    """The polars schema of :meth:`AttemptRecord.flat` rows, from the field types (never inferred
    from the first rows: a rare error late in a run has its column typed all along)."""
    import polars as pl

    kinds = {str: pl.Utf8, int: pl.Int64, float: pl.Float64}
    schema: dict[str, PolarsType] = {}
    for name, hint in typing.get_type_hints(AttemptRecord).items():
        if name == "counts":
            schema.update(dict.fromkeys(COUNT_FIELDS, pl.Int64))
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        schema[name] = pl.List(kinds[args[0]]) if typing.get_origin(hint) is tuple else kinds[args[0] if args else hint]
    return schema


class BatchMetricsTracker(RunMetrics):
    """The original contract. ``get_instance()`` is an opt-in process-wide tracker; new code should
    create a :class:`RunMetrics` per run instead."""

    _instance: ClassVar[BatchMetricsTracker | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get_instance(cls) -> BatchMetricsTracker:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(run_id="shared")
            return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        with cls._instance_lock:
            cls._instance = None


def max_in_window(times: list[float], weights: list[int], window: float) -> int:
    """Largest total weight of events whose times fall within any ``window`` seconds (sliding).
    Two events ``window`` apart are in different windows, the convention the rate limiter uses."""
    events = sorted(zip(times, weights))
    best = total = start = 0
    for t, w in events:
        total += w
        while t - events[start][0] >= window - 1e-9:
            total -= events[start][1]
            start += 1
        best = max(best, total)
    return best
