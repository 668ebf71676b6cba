"""Sending a run's chunks through a provider's batch API: packed, written as request files, each
uploaded and its batch created, every step recorded before the next (see
:mod:`toolkit.jobs.batchapi._runner`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from toolkit.core import Document, redact
from toolkit.execution import STOP_REQUESTED, ProgressFn, RunMetrics
from toolkit.jobs._runners import CallSink, Chunk, ChunkResult, OutcomeSink
from toolkit.jobs.batchapi._jobs import Job, JobBook
from toolkit.jobs.batchapi._providers import BatchProvider, NotAtProvider
from toolkit.jobs.batchapi._requests import BatchLimits, build_requests, file_bytes, split_files
from toolkit.packing import Packer, PackingSettings, PackResult

if TYPE_CHECKING:
    from toolkit.core import DocumentBatch
    from toolkit.extraction import BatchExtractor
    from toolkit.jobs._service import ServiceRun
    from toolkit.lm import ResolvedLM
    from toolkit.store import Store


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


class BatchService(Protocol):
    """What the batch API's runner asks of the run's service
    (:class:`~toolkit.jobs.ExtractionService`): its prompts and allowances, and its synchronous
    executor for what no batch answered."""

    layout: str
    metrics: RunMetrics
    extractor: BatchExtractor
    resolved: ResolvedLM
    api_base: str | None

    def packing_settings(self, token_budget: int | None = None, **overrides: object) -> PackingSettings: ...
    def allowance(self, batch: DocumentBatch) -> int: ...
    def execute(self, pack: PackResult, documents: int, progress: ProgressFn | bool | None = None,
                on_outcome: OutcomeSink | None = None, stop: threading.Event | None = None) -> ServiceRun: ...
    def close(self) -> None: ...


def request_model(resolved: ResolvedLM) -> str:
    """The ``model`` a request line names (a provider's own name, without LiteLLM's prefix)."""
    return resolved.model_id.split("/", 1)[1] if resolved.model_id.startswith(("openai/", "anthropic/")) \
        else resolved.model_id



def warn(message: str) -> None:
    print(f"warning: batch API: {redact(message)}", file=sys.stderr, flush=True)


class BatchSender:
    """The sending side of :class:`~toolkit.jobs.batchapi.BatchApiRunner` and the state it shares
    with the polling side: chunks sent through ``provider``'s batch API. ``db``: the run's store
    (None: nothing kept, as in the bench); ``progress``: a polling bar on stderr; ``stop``: the run's
    Stop event."""

    chunk_docs: int | None = None

    def __init__(self, service: BatchService, db: Store | None, run_id: str, provider: BatchProvider,
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

    def _create(self, job: Job) -> str:
        """Create the job's batch, recorded as asked for first (a crash then adopts it: :meth:`_ready`);
        its id."""
        self.book.update(job, status="creating")
        if job.input_file_id is None:  # saved only once uploaded: a file the provider cannot know
            raise NotAtProvider(f"job {job.key} has no uploaded file")
        job.batch_id = batch_id = self.provider.create(job.input_file_id, job.metadata(self.run_id))
        self.book.update(job, batch_id=batch_id, status="submitted")
        if self.settings.on_submitted is not None:
            self.settings.on_submitted(job.key, batch_id)
        return batch_id

    def _ready(self, job: Job) -> str:
        """A job without a batch id: its batch if the provider has one for it, else a new one."""
        try:
            found = self.provider.find(job.metadata(self.run_id))
        except Exception as exc:  # noqa: BLE001 - a provider that cannot list batches
            warn(f"cannot list the provider's batches ({exc}): job {job.key} is created (again, if it was before)")
            found = None
        if found is None:
            return self._create(job)
        job.batch_id = found
        self.book.update(job, batch_id=found, status="submitted")
        return found
