"""A run's batch jobs as the batch API's runner sees them: each job's requests, the documents at hand and
those sent, and its record in the store (:mod:`toolkit.store._batches`).

:class:`JobBook` reads a run's jobs once when a session starts (which documents are in an open
job, which were in a batch the provider lost) and writes each step of a job before the next one.
A job is closed (given its batch's final status) only once every document it sent is decided, so
a resumed run that reads fewer documents keeps the job's paid answers for a later one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.core import Document, DocumentBatch
from toolkit.jobs.batchapi._providers import BatchInfo
from toolkit.store import OPEN, Store

FINAL = ("extracted", "failed")  # a document in one of these is decided


@dataclass
class Job:
    """One request file: its key in the store, the requests at hand (``custom_id`` -> the packed
    batch of the documents this session has), the documents ``sent`` in each, its ids and status."""

    key: str
    requests: dict[str, DocumentBatch]
    sent: dict[str, list[str]]
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str = "uploaded"
    info: BatchInfo | None = None
    errors: int = 0  # polls in a row that raised

    @property
    def documents(self) -> list[Document]:
        return [d for b in self.requests.values() for d in b.documents]

    def metadata(self, run_id: str) -> dict[str, str]:
        """What its batch carries to be found again (:meth:`~toolkit.jobs.batchapi._providers.BatchProvider.find`)."""
        return {"batchx_run": run_id[:500], "batchx_job": self.key, "batchx_file": self.input_file_id or ""}

    @classmethod
    def restored(cls, stored: dict[str, Any]) -> Job:
        """A job of an earlier session, from its row (no documents at hand yet)."""
        return cls(stored["job_key"], {}, stored["requests"], stored["input_file_id"], stored["batch_id"],
                   stored["status"])

    def attach(self, document: Document, custom_id: str, tokens: int) -> None:
        """A document of this job read again: its answer comes from the job's batch."""
        batch = self.requests.setdefault(custom_id, DocumentBatch(batch_id=custom_id.rpartition(":")[2]))  # old: run:id
        batch.add_document(document, tokens)


@dataclass
class JobBook:
    """The jobs of ``run_id`` in ``db`` (None: nothing kept, as in the bench)."""

    db: Store | None
    run_id: str
    open: dict[str, dict[str, Any]] = field(default_factory=dict)  # job key -> its row, for open jobs
    in_flight: dict[str, tuple[str, str]] = field(default_factory=dict)  # doc id -> (job key, custom_id)
    sent_again: set[str] = field(default_factory=set)  # documents of a lost batch (sent again once already)
    count: int = 0  # jobs recorded for the run

    def __post_init__(self) -> None:
        jobs = self.db.batch_jobs(self.run_id) if self.db is not None else []
        self.count = len(jobs)
        for job in jobs:
            ids = [(d, cid) for cid, docs in job["requests"].items() for d in docs]
            if job["status"] in OPEN:
                self.open[job["job_key"]] = job
                self.in_flight.update((d, (job["job_key"], cid)) for d, cid in ids)
            elif job["status"] == "lost":
                self.sent_again.update(d for d, _ in ids)

    def new(self, requests: dict[str, DocumentBatch]) -> Job:
        key = f"job-{self.count:05d}"
        self.count += 1
        return Job(key, requests, {c: list(b.document_ids) for c, b in requests.items()})

    def save(self, job: Job) -> None:
        if self.db is not None:
            self.db.save_batch_job(self.run_id, job.key, job.sent, job.input_file_id)

    def update(self, job: Job, **values: str | None) -> None:
        job.status = values.get("status") or job.status
        if self.db is not None:
            self.db.update_batch_job(self.run_id, job.key, **values)

    def lines_recorded(self, job: Job) -> bool:
        return self.db is not None and self.db.batch_lines_recorded(self.run_id, job.key)

    def close_decided(self, jobs: list[Job]) -> None:
        """Give each settled job whose every document is decided its batch's final status."""
        statuses = self.db.statuses(self.run_id) if self.db is not None else {}
        for job in jobs:
            done = all(statuses.get(d) in FINAL for ids in job.sent.values() for d in ids)
            if job.status == "settled" and job.info is not None and (done or self.db is None):
                self.update(job, status=job.info.status)
