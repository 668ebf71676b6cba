"""Polling a run's batches until each ends, settling their lines, and sending what no batch
answered through the synchronous executor (see :mod:`toolkit.jobs.batchapi._runner`)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from toolkit.core import redact
from toolkit.execution import STOP_REQUESTED
from toolkit.jobs._runners import CallSink, ChunkResult, OutcomeSink
from toolkit.jobs.batchapi._jobs import Job
from toolkit.jobs.batchapi._providers import BatchInfo, BatchProvider, NotAtProvider
from toolkit.jobs.batchapi._replies import Settled, settle_job
from toolkit.jobs.batchapi._sending import BatchSender, BatchService, warn
from toolkit.packing import Packer, PackResult

if TYPE_CHECKING:
    from tqdm.auto import tqdm

MAX_POLL_ERRORS = 5  # polls of one job in a row that raise before the run stops (resumable)
STOP_SLICE = 0.2  # seconds between looks at the stop event while waiting to poll


class BatchPoller(BatchSender):
    """The polling side of :class:`~toolkit.jobs.batchapi.BatchApiRunner`."""

    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        """Poll every batch until it ends, settle it, then run what no batch answered synchronously."""
        self.jobs += self._resumed.values()
        self._resumed.clear()
        if not self.jobs and not self._sync:
            return
        settled, stopped = self._poll(decided, record) if not self._stopped() else (Settled(), STOP_REQUESTED)
        retry = {**self._sync, **settled.retry}
        stopped = stopped or (STOP_REQUESTED if self._stopped() and retry else None)
        seconds = self.provider.now() - (self._started if self._started is not None else self.provider.now())
        yield ChunkResult(settled.outcomes, settled.attempts, sum(len(j.requests) for j in self.jobs), seconds,
                          stopped)
        if retry and not stopped:
            documents = [self._docs[i] for i in retry if i in self._docs]
            pack = Packer(self._packing or self.service.packing_settings()).pack(
                documents, token_counts=[self._tokens.get(d.id, 0) or 1 for d in documents])
            yield _fallback(self.service, pack, decided, record, self.stop)
        self.book.close_decided(self.jobs)
        self.jobs, self._sync = [], {}

    def _poll(self, decided: OutcomeSink, record: CallSink) -> tuple[Settled, str | None]:
        """Every job polled until settled (one uploaded before a crash or Stop created or adopted
        first; a lost one's documents sent again); the settlements, and why polling stopped early
        (None: it did not)."""
        waiting = list(self.jobs)
        total = Settled()
        bar = _bar(sum(len(j.requests) for j in waiting)) if self.progress else None
        try:
            while waiting:
                for job in list(waiting):
                    if self._stopped():
                        return total, STOP_REQUESTED
                    try:
                        batch_id = job.batch_id if job.batch_id is not None else self._ready(job)
                        job.info = info = self.provider.retrieve(batch_id)
                        if info.done:
                            self._settle(job, info, total, decided, record)
                            waiting.remove(job)
                        job.errors = 0
                    except NotAtProvider as exc:
                        waiting.remove(job)
                        waiting += self._lost(job, exc, total)
                    except Exception as exc:  # noqa: BLE001 - polled again; after a few, the run stops
                        job.errors += 1
                        if job.errors >= MAX_POLL_ERRORS:
                            return total, redact(f"batch API: {job.batch_id} failed {job.errors} polls in a row: "
                                                 f"{type(exc).__name__}: {exc}; resume with the same run name")
                if bar is not None:
                    bar.n = sum(j.info.completed + j.info.failed for j in self.jobs if j.info)
                    bar.set_postfix(batches_open=len(waiting), refresh=True)
                if waiting:
                    _wait(self.provider, self.settings.poll_seconds, self.stop)
        finally:
            if bar is not None:
                bar.close()
        return total, None

    def _settle(self, job: Job, info: BatchInfo, total: Settled, decided: OutcomeSink, record: CallSink) -> None:
        """A finished job's output and error files (``info``: its batch as retrieved), settled: its lines
        recorded once (a job settled in an earlier session is not recorded again), its status written, then
        its outcomes handed on."""
        output = self.provider.content(info.output_file_id) if info.output_file_id else None
        errors = self.provider.content(info.error_file_id) if info.error_file_id else None
        part = settle_job(self.service.extractor, job.requests, output, errors, info.status, time.time(), job.key,
                          job.sent)
        if info.errors and info.status == "failed":
            part.retry = {i: f"batch API: batch failed: {info.errors}" for i in part.retry}
        if not self.book.lines_recorded(job):
            record(part.attempts)
            self.failed_lines += sum(a.outcome != "ok" for a in part.attempts)
            total.attempts += part.attempts
        self.book.update(job, status="settled", output_file_id=info.output_file_id, error_file_id=info.error_file_id)
        for outcome in part.outcomes:
            decided(outcome)
        total.outcomes += part.outcomes
        total.retry.update(part.retry)

    def _lost(self, job: Job, exc: NotAtProvider, total: Settled) -> list[Job]:
        """A job whose batch (or output) the provider no longer knows: reported, its documents sent
        again once (those sent again before go to the synchronous executor); the new jobs."""
        documents = job.documents
        where = f"batch {job.batch_id}" if job.batch_id else "its batch never created"
        warn(f"the provider does not know {exc.args[0] if exc.args else job.batch_id} (job {job.key}, {where}): "
              f"its {len(documents)} documents here are sent again")
        self.lost += 1
        self.book.update(job, status="lost")
        again = [d for d in documents if d.id not in self.book.sent_again]
        total.retry.update({d.id: "batch API: its batch was lost by the provider twice" for d in documents
                            if d.id in self.book.sent_again})
        self.book.sent_again.update(d.id for d in again)
        return [j for j in self._send_new(again) if j.batch_id is not None]


def _fallback(service: BatchService, pack: PackResult, decided: OutcomeSink, record: CallSink,
              stop: threading.Event | None) -> ChunkResult:
    """Documents no batch answered (``pack``), through ``service``'s synchronous executor."""
    metrics = service.metrics
    seen = len(metrics.attempts)
    try:
        run = service.execute(pack, sum(b.batch_size for b in pack.batches), progress=False, on_outcome=decided,
                              stop=stop)
    finally:
        record(metrics.attempts[seen:])
    return ChunkResult(run.report.outcomes, run.attempts, len(pack.batches), run.report.seconds, run.stopped)


def _wait(provider: BatchProvider, seconds: float, stop: threading.Event | None) -> None:
    """``provider``'s clock advanced ``seconds``, looking at the stop event on the way."""
    while seconds > 0 and not (stop is not None and stop.is_set()):
        step = seconds if stop is None else min(seconds, STOP_SLICE)
        provider.sleep(step)
        seconds -= step


def _bar(total: int) -> tqdm:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="req", desc="batch-api", file=sys.stderr, dynamic_ncols=True)
