"""The batch-API execution mode: a run's packed batches sent as a provider batch, polled, settled.

:class:`BatchApiEngine` is an :class:`~toolkit.engines.Engine`, so the main job runs it through its
one code path (``extract --mode batch-api``). ``submit`` packs a chunk with the run's packer, writes
each packed batch as one request line (:mod:`toolkit.batchapi.requests`), splits the lines into
files within the provider's limits, uploads each file and creates its batch, recording file id,
batch id and every request's documents in the store *before* moving on. ``drain`` polls every
batch with a progress bar until it ends, settles its output lines with the synchronous path's
reply code (:mod:`toolkit.batchapi.replies`), and sends every document a batch did not answer
(left out, cut off, failed line, expired or failed batch) through the synchronous executor
(:meth:`toolkit.service.ExtractionService.execute`), where it ends extracted or failed with its
reason. A resumed run finds its open jobs in the store: their documents are not sent again, their
batches are polled. :func:`run_batch_api` runs a list of documents this way (for the bench).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.batchapi.providers import BatchInfo, BatchProvider
from toolkit.batchapi.replies import Settled, settle_job
from toolkit.batchapi.requests import BatchLimits, build_requests, file_bytes, split_files
from toolkit.counts import Counts
from toolkit.documents import Document
from toolkit.engines import CallSink, Chunk, ChunkResult, OutcomeSink
from toolkit.metrics import AttemptRecord
from toolkit.models import DocumentBatch
from toolkit.outcomes import DocumentOutcome, ExecutionReport
from toolkit.packer import Packer, PackingSettings


@dataclass(frozen=True)
class BatchApiSettings:
    """How batches are sent and awaited: ``poll_seconds`` between polls, the provider's file
    ``limits``; ``on_submitted(job_key, batch_id)`` is called once each batch is recorded (a test
    stops a run there)."""

    poll_seconds: float = 30.0
    limits: BatchLimits = field(default_factory=BatchLimits)
    on_submitted: Callable[[str, str], None] | None = None

    def __post_init__(self) -> None:
        if self.poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")


@dataclass
class _Job:
    """One request file: its key in the store, its requests (``custom_id`` -> packed batch) and ids."""

    key: str
    requests: dict[str, DocumentBatch]
    input_file_id: str | None = None
    batch_id: str | None = None
    info: BatchInfo | None = None


def batch_provider(resolved: Any, api_base: str | None = None) -> BatchProvider:
    """The batch API of ``resolved``: the server at ``api_base`` (OpenAI-compatible), the in-process
    emulated one for ``emulated:PROFILE``, OpenAI's for ``openai/MODEL``."""
    from toolkit.batchapi.providers import LiteLLMBatches

    if api_base:
        return LiteLLMBatches(api_base)
    if resolved.emulated:
        from toolkit.batchapi.emulated import emulated_provider

        return emulated_provider(resolved)
    if resolved.spec.startswith("openai/"):
        return LiteLLMBatches()
    raise ValueError(f"--mode batch-api needs a batch API: {resolved.spec} has none here (use openai/MODEL, "
                     "an OpenAI-compatible --api-base, or emulated:PROFILE)")


def request_model(resolved: Any) -> str:
    """The ``model`` a request line names (a provider's own name, without LiteLLM's prefix)."""
    return resolved.model_id.split("/", 1)[1] if resolved.model_id.startswith("openai/") else resolved.model_id


class BatchApiEngine:
    """Chunks sent through ``provider``'s batch API (see the module docstring). ``db``: the run's
    store (None: nothing kept, as in the bench); ``progress``: a polling bar on stderr."""

    chunk_docs = None

    def __init__(self, service: Any, db: Any, run_id: str, provider: BatchProvider,
                 settings: BatchApiSettings | None = None, progress: bool = True) -> None:
        if service.layout != "packed":
            raise ValueError("--mode batch-api sends packed prompts: use --layout packed (or another LM)")
        self.service, self.db, self.run_id, self.provider = service, db, run_id, provider
        self.settings = settings or BatchApiSettings()
        self.progress = progress
        self.jobs: list[_Job] = []
        self.failed_lines = 0
        self._open = {j["job_key"]: j for j in db.batch_jobs(run_id, open_only=True)} if db is not None else {}
        self._in_flight = {d: (key, cid) for key, j in self._open.items() for cid, ids in j["requests"].items()
                           for d in ids}
        self._seen = len(db.batch_jobs(run_id)) if db is not None else 0
        self._resumed: dict[str, _Job] = {}
        self._packing: PackingSettings | None = None
        self._tokens: dict[str, int] = {}
        self._started: float | None = None

    @property
    def failed_calls(self) -> int:
        return self.service.metrics.failed_attempts + self.failed_lines

    # --------------------------------------------------------------------------------- submit
    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        """Send the chunk's documents (those not already in an open batch) as new batches."""
        self._packing = chunk.packing
        self._tokens.update(zip((d.id for d in chunk.documents), chunk.token_counts))
        if self._started is None:
            self._started = self.provider.now()
        fresh, counts = [], []
        for document, tokens in zip(chunk.documents, chunk.token_counts):
            if document.id in self._in_flight:
                self._attach(document)
            else:
                fresh.append(document)
                counts.append(tokens)
        if fresh:
            pack = Packer(chunk.packing).pack(fresh, token_counts=counts)
            requests = build_requests(self.service.extractor, pack.batches, self.run_id,
                                      request_model(self.service.resolved), self.service.allowance)
            for part in split_files(requests, self.settings.limits):
                self._send(_Job(f"job-{self._seen:05d}", {r.custom_id: r.batch for r in part}), file_bytes(part))
                self._seen += 1
        return iter(())

    def _attach(self, document: Document) -> None:
        """A document of a batch still in flight from an earlier session: polled, not sent again."""
        key, cid = self._in_flight[document.id]
        stored = self._open[key]
        job = self._resumed.setdefault(key, _Job(key, {}, stored["input_file_id"], stored["batch_id"]))
        batch = job.requests.setdefault(cid, DocumentBatch(batch_id=cid.rpartition(":")[2]))
        batch.add_document(document, self._tokens.get(document.id, 0))

    def _send(self, job: _Job, data: bytes) -> None:
        """Upload a request file and create its batch, each step recorded before the next."""
        job.input_file_id = self.provider.upload(f"{self.run_id}-{job.key}.jsonl", data)
        if self.db is not None:
            self.db.save_batch_job(self.run_id, job.key, {c: b.document_ids for c, b in job.requests.items()},
                                   job.input_file_id)
        self._create(job)
        self.jobs.append(job)

    def _create(self, job: _Job) -> None:
        job.batch_id = self.provider.create(job.input_file_id, {"batchx_run": self.run_id[:500], "batchx_job": job.key})
        if self.db is not None:
            self.db.update_batch_job(self.run_id, job.key, batch_id=job.batch_id, status="submitted")
        if self.settings.on_submitted is not None:
            self.settings.on_submitted(job.key, job.batch_id)

    # ---------------------------------------------------------------------------------- drain
    def drain(self, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        """Poll every batch until it ends, settle it, then run what it did not answer synchronously."""
        for job in self._resumed.values():
            if job.batch_id is None:  # uploaded, never created: create it now (the file is not sent again)
                self._create(job)
            self.jobs.append(job)
        self._resumed.clear()
        if not self.jobs:
            return
        settled = self._poll(decided, record)
        seconds = self.provider.now() - (self._started if self._started is not None else self.provider.now())
        yield ChunkResult(settled.outcomes, settled.attempts, sum(len(j.requests) for j in self.jobs), seconds)
        if settled.retry:
            yield self._fallback(settled.retry, decided, record)
        for job in self.jobs:
            if self.db is not None:
                self.db.update_batch_job(self.run_id, job.key, status=job.info.status if job.info else "closed")
        self.jobs = []

    def _poll(self, decided: OutcomeSink, record: CallSink) -> Settled:
        waiting = list(self.jobs)
        total = Settled()
        bar = self._bar(sum(len(j.requests) for j in waiting))
        try:
            while waiting:
                for job in list(waiting):
                    job.info = self.provider.retrieve(job.batch_id)
                    if job.info.done:
                        waiting.remove(job)
                        self._settle(job, total, decided, record)
                if bar is not None:
                    bar.n = sum(j.info.completed + j.info.failed for j in self.jobs if j.info)
                    bar.set_postfix(batches_open=len(waiting), refresh=True)
                if waiting:
                    self.provider.sleep(self.settings.poll_seconds)
        finally:
            if bar is not None:
                bar.close()
        return total

    def _bar(self, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="req", desc="batch-api", file=sys.stderr, dynamic_ncols=True)

    def _settle(self, job: _Job, total: Settled, decided: OutcomeSink, record: CallSink) -> None:
        """A finished job's output and error files, settled; outcomes and records handed on at once."""
        info = job.info
        output = self.provider.content(info.output_file_id) if info.output_file_id else None
        errors = self.provider.content(info.error_file_id) if info.error_file_id else None
        part = settle_job(self.service.extractor, job.requests, output, errors, info.status, time.time())
        if info.errors and info.status == "failed":
            part.retry = {i: f"batch API: batch failed: {info.errors}" for i in part.retry}
        record(part.attempts)
        for outcome in part.outcomes:
            decided(outcome)
        self.failed_lines += sum(a.outcome != "ok" for a in part.attempts)
        total.outcomes += part.outcomes
        total.attempts += part.attempts
        total.retry.update(part.retry)

    def _fallback(self, retry: dict[str, str], decided: OutcomeSink, record: CallSink) -> ChunkResult:
        """Documents no batch answered, through the synchronous executor (packed again)."""
        documents = [d for j in self.jobs for b in j.requests.values() for d in b.documents if d.id in retry]
        packing = self._packing or self.service.packing_settings()
        pack = Packer(packing).pack(documents, token_counts=[self._tokens.get(d.id, 0) or 1 for d in documents])
        metrics = self.service.metrics
        seen = len(metrics.attempts)
        try:
            run = self.service.execute(pack, len(documents), progress=False, on_outcome=decided)
        finally:
            record(metrics.attempts[seen:])
        return ChunkResult(run.report.outcomes, run.attempts, len(pack.batches), run.report.seconds, run.stopped)

    def summary(self) -> dict[str, Any]:
        """What the run's summary says of this engine: the mode, the jobs sent and the failed lines
        (the counts of its calls: :func:`~toolkit.batchapi.replies.batch_api_fields`)."""
        return {"mode": "batch-api", "batch_api_jobs": self._seen, "batch_api_failed_lines": self.failed_lines}

    def close(self) -> None:
        pass


def run_batch_api(service: Any, documents: Sequence[Document], token_budget: int | None = None, *,
                  provider: BatchProvider | None = None, settings: BatchApiSettings | None = None,
                  run_id: str = "bench", progress: bool = False, **packing: Any) -> Any:
    """Extract ``documents`` through the batch API of ``service``'s LM (its in-process emulation
    for ``emulated:PROFILE``, on a virtual clock), packed as ``service.run`` packs them; returns a
    :class:`~toolkit.service.ServiceRun` (outcomes in input order, every call's record: lines
    through the batch API have batch ids starting ``batch-api:``, the synchronous fallback's not;
    ``report.seconds``: the batches' turnaround plus the fallback's time)."""
    from toolkit.service import ServiceRun
    from toolkit.tokens import get_counter

    documents = list(documents)
    pack_settings = service.packing_settings(token_budget, **packing)
    counter = get_counter(pack_settings.model)
    chunk = Chunk(documents, [counter.count(d.text) for d in documents], pack_settings)
    engine = BatchApiEngine(service, None, run_id, provider or batch_provider(service.resolved, service.api_base),
                            settings, progress)
    outcomes: dict[str, DocumentOutcome] = {}
    attempts: list[AttemptRecord] = []
    sink = lambda o: outcomes.__setitem__(o.id, o)  # noqa: E731
    results = [*engine.submit(chunk, sink, attempts.extend), *engine.drain(sink, attempts.extend)]
    report = ExecutionReport([outcomes.get(d.id) or DocumentOutcome(d.id) for d in documents],
                             counts=Counts.total(a.counts for a in attempts), seconds=sum(r.seconds for r in results),
                             stop_reason=next((r.stopped for r in results if r.stopped), None))
    pack = chunk.pack()
    return ServiceRun(pack, report, attempts, len(documents), report.stop_reason)
