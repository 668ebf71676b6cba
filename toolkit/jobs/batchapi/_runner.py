"""The batch-API execution mode: a run's packed batches sent as a provider batch, polled, settled.

:class:`BatchApiRunner` is an :class:`~toolkit.jobs._runners.Runner`, so the main job runs it through its
one code path (``extract --mode batch-api``). ``submit`` packs a chunk with the run's packer, writes
each packed batch as one request line (:mod:`toolkit.jobs.batchapi._requests`), splits the lines into
files within the provider's limits, uploads each file and creates its batch, recording file id,
batch id and every request's documents in the store *before* moving on. ``drain`` polls every
batch with a progress bar until it ends, settles its output lines with the synchronous path's
reply code (:mod:`toolkit.jobs.batchapi._replies`), and sends every document a batch did not answer
(left out, cut off, failed line, expired or failed batch) through the synchronous executor
(:meth:`toolkit.jobs._service.ExtractionService.execute`), where it ends extracted or failed with its
reason. A resumed run finds its open jobs in the store (:mod:`toolkit.jobs.batchapi._jobs`): their
documents are not sent again, their batches are polled; a batch created just before a crash is
found by its metadata and adopted. Each job is settled once: its lines are recorded and its status
written before its documents are handed on, so a kill at any point never records a line twice.
A batch the provider no longer knows is reported and its documents sent again once (then through
the synchronous executor); a provider that keeps failing stops the run, resumable.

``stop`` (the run's Stop event): once set nothing is uploaded or created, no synchronous call
starts, polling ends at once, and the engine reports the run stopped. What was already paid is
recorded, and the answers of a job being settled are kept. :func:`run_batch_api` runs a list of
documents this way (for the bench).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.core import Counts, Document, redact
from toolkit.execution import STOP_REQUESTED, AttemptRecord, DocumentOutcome, ExecutionReport
from toolkit.jobs._runners import CallSink, Chunk, ChunkResult, OutcomeSink
from toolkit.jobs.batchapi._jobs import Job, JobBook
from toolkit.jobs.batchapi._providers import BatchProvider, NotAtProvider
from toolkit.jobs.batchapi._replies import Settled, settle_job
from toolkit.jobs.batchapi._requests import BatchLimits, build_requests, file_bytes, split_files
from toolkit.packing import Packer, PackingSettings

MAX_POLL_ERRORS = 5  # polls of one job in a row that raise before the run stops (resumable)
STOP_SLICE = 0.2  # seconds between looks at the stop event while waiting to poll


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


def batch_provider(resolved: Any, api_base: str | None = None) -> BatchProvider:
    """The batch API of ``resolved``: Anthropic's Message Batches for ``anthropic/MODEL`` (at
    ``api_base`` if given), the OpenAI-compatible server at ``api_base``, the in-process emulated
    one for ``emulated:PROFILE``, OpenAI's for ``openai/MODEL``; any other LM has none (one line)."""
    from toolkit.jobs.batchapi._providers import LiteLLMBatches

    if resolved.spec.startswith("anthropic/"):
        from toolkit.jobs.batchapi._anthropic import AnthropicBatches, AnthropicHTTP

        return AnthropicBatches(AnthropicHTTP(api_base), getattr(resolved.lm, "kwargs", {}).get("prompt_cache"))
    if api_base:
        return LiteLLMBatches(api_base)
    if resolved.emulated:
        from toolkit.jobs.batchapi._emulated import emulated_provider

        return emulated_provider(resolved)
    if resolved.spec.startswith("openai/"):
        return LiteLLMBatches()
    raise ValueError(f"--mode batch-api needs a provider's batch API: {resolved.spec} has none (use openai/MODEL, "
                     "anthropic/MODEL, an OpenAI-compatible --api-base, or emulated:PROFILE)")


def request_model(resolved: Any) -> str:
    """The ``model`` a request line names (a provider's own name, without LiteLLM's prefix)."""
    return resolved.model_id.split("/", 1)[1] if resolved.model_id.startswith(("openai/", "anthropic/")) \
        else resolved.model_id


class BatchApiRunner:
    """Chunks sent through ``provider``'s batch API (see the module docstring). ``db``: the run's
    store (None: nothing kept, as in the bench); ``progress``: a polling bar on stderr; ``stop``:
    the run's Stop event."""

    chunk_docs = None

    def __init__(self, service: Any, db: Any, run_id: str, provider: BatchProvider,
                 settings: BatchApiSettings | None = None, progress: bool = True,
                 stop: threading.Event | None = None) -> None:
        if service.layout != "packed":
            raise ValueError("--mode batch-api sends packed prompts: use --layout packed (or another LM)")
        self.service, self.run_id, self.provider = service, run_id, provider
        self.settings = settings or BatchApiSettings()
        self.progress, self.stop = progress, stop
        self.book = JobBook(db, run_id)
        self.jobs: list[Job] = []  # this session's, to poll
        self._resumed: dict[str, Job] = {}
        self._sync: dict[str, str] = {}  # doc id -> why it goes to the synchronous executor without a batch
        self._docs: dict[str, Document] = {}
        self._tokens: dict[str, int] = {}
        self._packing: PackingSettings | None = None
        self._started: float | None = None
        self.failed_lines = self.lost = 0

    @property
    def failed_calls(self) -> int:
        return self.service.metrics.failed_attempts + self.failed_lines

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    # --------------------------------------------------------------------------------- submit
    def submit(self, chunk: Chunk, decided: OutcomeSink, record: CallSink) -> Iterator[ChunkResult]:
        """Send the chunk's documents (those not already in an open job) as new batches."""
        self._packing = chunk.packing
        self._tokens.update(zip((d.id for d in chunk.documents), chunk.token_counts))
        self._docs.update((d.id, d) for d in chunk.documents)
        self._started = self.provider.now() if self._started is None else self._started
        fresh: list[Document] = []
        for document in chunk.documents:
            if document.id in self.book.in_flight:
                key, cid = self.book.in_flight[document.id]
                job = self._resumed.setdefault(key, Job.restored(self.book.open[key]))
                job.attach(document, cid, self._tokens[document.id])
            elif document.id in self.book.sent_again:
                self._sync[document.id] = "batch API: its batch was lost by the provider"
            else:
                fresh.append(document)
        self._send_new(fresh)  # nothing once Stop is set
        if self._stopped():
            yield ChunkResult([], [], 0, 0.0, STOP_REQUESTED)

    def _send_new(self, documents: list[Document]) -> list[Job]:
        """``documents`` packed into request files, each uploaded and its batch created (until Stop)."""
        if not documents:
            return []
        pack = Packer(self._packing or self.service.packing_settings()).pack(
            documents, token_counts=[self._tokens.get(d.id, 0) for d in documents])
        requests = build_requests(self.service.extractor, pack.batches, request_model(self.service.resolved),
                                  self.service.allowance)
        sent = []
        for part in split_files(requests, self.settings.limits):
            if self._stopped():
                break
            job = self.book.new({r.custom_id: r.batch for r in part})
            job.input_file_id = self.provider.upload(f"{self.run_id}-{job.key}.jsonl", file_bytes(part))
            self.book.save(job)
            self.jobs.append(job)
            sent.append(job)
            if not self._stopped():
                self._create(job)
        return sent

    def _create(self, job: Job) -> None:
        """Create the job's batch, recorded as asked for first (a crash then adopts it: :meth:`_ready`)."""
        self.book.update(job, status="creating")
        job.batch_id = self.provider.create(job.input_file_id, job.metadata(self.run_id))
        self.book.update(job, batch_id=job.batch_id, status="submitted")
        if self.settings.on_submitted is not None:
            self.settings.on_submitted(job.key, job.batch_id)

    def _ready(self, job: Job) -> None:
        """A job without a batch id: its batch if the provider has one for it, else a new one."""
        try:
            found = self.provider.find(job.metadata(self.run_id))
        except Exception as exc:  # noqa: BLE001 - a provider that cannot list batches
            _warn(f"cannot list the provider's batches ({exc}): job {job.key} is created (again, if it was before)")
            found = None
        if found is None:
            self._create(job)
        else:
            job.batch_id = found
            self.book.update(job, batch_id=found, status="submitted")

    # ---------------------------------------------------------------------------------- drain
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
                        if job.batch_id is None:
                            self._ready(job)
                        job.info = self.provider.retrieve(job.batch_id)
                        if job.info.done:
                            self._settle(job, total, decided, record)
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

    def _settle(self, job: Job, total: Settled, decided: OutcomeSink, record: CallSink) -> None:
        """A finished job's output and error files, settled: its lines recorded once (a job settled
        in an earlier session is not recorded again), its status written, then its outcomes handed on."""
        info = job.info
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
        _warn(f"the provider does not know {exc.args[0] if exc.args else job.batch_id} (job {job.key}, {where}): "
              f"its {len(documents)} documents here are sent again")
        self.lost += 1
        self.book.update(job, status="lost")
        again = [d for d in documents if d.id not in self.book.sent_again]
        total.retry.update({d.id: "batch API: its batch was lost by the provider twice" for d in documents
                            if d.id in self.book.sent_again})
        self.book.sent_again.update(d.id for d in again)
        return [j for j in self._send_new(again) if j.batch_id is not None]

    def summary(self) -> dict[str, Any]:
        """What the run's summary says of this engine: the mode, the run's jobs, this session's
        failed lines and lost batches (the counts of its calls: :func:`~toolkit.jobs.batchapi._replies.batch_api_fields`)."""
        return {"mode": "batch-api", "batch_api_jobs": self.book.count, "batch_api_failed_lines": self.failed_lines,
                "batch_api_lost_batches": self.lost}

    def close(self) -> None:
        """Ends the service's run (the synchronous fallback's)."""
        self.service.close()


def _fallback(service: Any, pack: Any, decided: OutcomeSink, record: CallSink,
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


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="req", desc="batch-api", file=sys.stderr, dynamic_ncols=True)


def _warn(message: str) -> None:
    print(f"warning: batch API: {redact(message)}", file=sys.stderr, flush=True)


def run_batch_api(service: Any, documents: Sequence[Document], token_budget: int | None = None, *,
                  provider: BatchProvider | None = None, settings: BatchApiSettings | None = None,
                  run_id: str = "bench", progress: bool = False, **packing: Any) -> Any:
    """Extract ``documents`` through the batch API of ``service``'s LM (its in-process emulation
    for ``emulated:PROFILE``, on a virtual clock), packed as ``service.run`` packs them; returns a
    :class:`~toolkit.jobs._service.ServiceRun` (outcomes in input order, every call's record: lines
    through the batch API have batch ids starting ``batch-api:``, the synchronous fallback's not;
    ``report.seconds``: the batches' turnaround plus the fallback's time)."""
    from toolkit.jobs._service import ServiceRun
    from toolkit.packing import get_counter

    documents = list(documents)
    pack_settings = service.packing_settings(token_budget, **packing)
    counter = get_counter(pack_settings.model)
    chunk = Chunk(documents, [counter.count(d.text) for d in documents], pack_settings)
    engine = BatchApiRunner(service, None, run_id, provider or batch_provider(service.resolved, service.api_base),
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
