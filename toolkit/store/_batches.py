"""Batch-API jobs in the store: each request file submitted to a provider (its input file id,
batch id, status, output and error files) and the documents of each of its requests, so a run
stopped while a batch is in flight resumes by polling that batch instead of paying twice.

A job's status says what a resumed run does with it: ``uploaded`` (the file is at the provider, no
batch asked for: create it), ``creating`` (a batch was asked for and may exist: find it by its
metadata before creating one), ``submitted`` (poll its batch), ``settled`` (its batch ended and its
lines are recorded; some of its documents are still to be decided from its output), ``lost`` (the
provider no longer knew its batch; its documents were sent again), or the batch's final status
once every document of the job is decided."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.store._db import Database, now

OPEN = ("uploaded", "creating", "submitted", "settled")  # a job in one of these is polled, not sent again
_FIELDS = ("input_file_id", "batch_id", "status", "output_file_id", "error_file_id")


class BatchLedger(Database):
    """The ``batchx_batch_jobs`` and ``batchx_batch_docs`` tables."""

    def save_batch_job(self, run_id: str, job_key: str, requests: Mapping[str, Sequence[str]],
                       input_file_id: str | None = None, status: str = "uploaded") -> None:
        """Record a job (a request file): ``requests`` maps each ``custom_id`` to its documents."""
        stamp = now()

        def work() -> None:
            self._execute(f"INSERT INTO {self._t('batchx_batch_jobs')} (run_id, job_key, input_file_id, status, "
                          "requests, submitted, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (run_id, job_key, input_file_id, status, len(requests), stamp, stamp))
            self._many(f"INSERT INTO {self._t('batchx_batch_docs')} (run_id, job_key, doc_id, custom_id) "
                       "VALUES (?, ?, ?, ?)", [(run_id, job_key, d, cid) for cid, ids in requests.items() for d in ids])
        self._transaction(work, "recording a batch job", run_id)

    def update_batch_job(self, run_id: str, job_key: str, **values: Any) -> None:
        """Set some of ``input_file_id``, ``batch_id``, ``status``, ``output_file_id``, ``error_file_id``."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown batch job fields {sorted(unknown)}")
        names = sorted(values)
        sets = ", ".join(f"{n} = ?" for n in names)
        self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_batch_jobs')} SET {sets}, updated = ? WHERE run_id = ? AND job_key = ?",
            (*(values[n] for n in names), now(), run_id, job_key)), "updating a batch job", run_id)

    def batch_jobs(self, run_id: str, open_only: bool = False) -> list[dict[str, Any]]:
        """The run's jobs in the order they were recorded, each with ``requests``: custom_id ->
        document ids; ``open_only``: those still in the provider's hands (see :data:`OPEN`)."""
        jobs = self._query(f"SELECT * FROM {self._t('batchx_batch_jobs')} WHERE run_id = ? ORDER BY submitted, "
                           "job_key", (run_id,))
        docs = self._query(f"SELECT job_key, doc_id, custom_id FROM {self._t('batchx_batch_docs')} WHERE run_id = ?",
                           (run_id,))
        for job in jobs:
            job["requests"] = {}
        by_key = {j["job_key"]: j for j in jobs}
        for row in docs:
            if row["job_key"] in by_key:
                by_key[row["job_key"]]["requests"].setdefault(row["custom_id"], []).append(row["doc_id"])
        return [j for j in jobs if not open_only or j["status"] in OPEN]

    def batch_lines_recorded(self, run_id: str, job_key: str) -> bool:
        """Whether the lines of ``job_key`` are in the attempts table already (their records' batch
        ids are ``batch-api:<job>/...``): a job is settled, and paid for, once."""
        rows = self._query(f"SELECT COUNT(*) AS n FROM {self._t('batchx_attempts')} WHERE run_id = ? AND batch_id "
                           "LIKE ?", (run_id, f"batch-api:{job_key}/%"))
        return bool(rows[0]["n"])
